"""Multi-node patterns for rewrite rules, matched against the graph from a root node.

A pattern describes the value a node computes and, recursively, the values
it reads:

    X = Pat.any("x")
    GELU = Pat("mul", (Pat("mul", (X, Pat.const(0.5)), single_use=True),
                       Pat("add", (Pat("erf", (Pat("div", (X, Pat.const(SQRT2)),)),), Pat.const(1)))))

- `Pat(op, inputs)`: a value defined by a node whose op is `op` (a name, a tuple
  of names, or None for any op). With `inputs` the node has exactly that many
  inputs, each matching its pattern; without, its inputs are not looked at.
  Two-input add, mul, maximum and minimum also match with their inputs swapped
  (`commutative=` overrides).
- `Pat.any()`: any value; `Pat.param()`: a parameter; `Pat.const(c)`: a
  parameter holding `c` in every element (within `rel`); `Pat.either(a, b, ..)`:
  the first alternative that leads to a whole match.
- `name=` captures the matched value; a name used twice must match the same
  value both times (`x` above). `Match[name]` is the value, `Match.node(name)`
  its producer.
- `where=` is a predicate: `where(graph, node)` on node patterns,
  `where(graph, value)` on the others.
- `single_use=True`: the matched value dies with the match: no graph output,
  and every node reading it is part of the match (for tree patterns: exactly
  one reader).

Matching backtracks: every arrangement of commutative inputs and every
alternative is tried until captures agree, and `PatternRule` offers each
match to its function until one returns a replacement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.passes.rewrite import Replacement, rule_name

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum"})

Predicate = Callable[[Graph, Any], bool]


def const_value(graph: Graph, name: str) -> float | None:
    """The number parameter `name` holds in every element; None if it is no parameter or not uniform."""
    if not graph.is_param(name):
        return None
    data = graph.param(name).data
    if data.size == 0:
        return None
    first = data.flat[0]
    return float(first) if bool(np.all(data == first)) else None  # NaN is never uniform


def holds(graph: Graph, name: str, value: float, rel: float = 0.0) -> bool:
    """Parameter `name` holds `value` everywhere, within `rel` relative (absolute below 1)."""
    got = const_value(graph, name)
    return got is not None and abs(got - value) <= rel * max(1.0, abs(value))


@dataclass(frozen=True)
class Pat:
    """A pattern for one value (see the module docstring); build leaves with any/param/const/either."""

    op: str | tuple[str, ...] | None = None
    inputs: tuple["Pat", ...] | None = None
    name: str | None = None
    where: Predicate | None = None
    single_use: bool = False
    commutative: bool | None = None
    kind: str = "node"  # "node" | "value" | "param" | "either"
    alternatives: tuple["Pat", ...] = field(default=(), repr=False)

    @classmethod
    def any(cls, name: str | None = None, *, where: Predicate | None = None) -> "Pat":
        return cls(name=name, where=where, kind="value")

    @classmethod
    def param(cls, name: str | None = None, *, where: Predicate | None = None) -> "Pat":
        return cls(name=name, where=where, kind="param")

    @classmethod
    def const(cls, value: float, *, rel: float = 0.0, name: str | None = None) -> "Pat":
        return cls(name=name, where=partial(holds, value=value, rel=rel), kind="param")

    @classmethod
    def either(cls, *alternatives: "Pat", name: str | None = None) -> "Pat":
        return cls(name=name, kind="either", alternatives=alternatives)

    def root_ops(self) -> tuple[str, ...] | None:
        """The ops a root node may have (None: any); a rule is tried only on those."""
        if self.kind == "either":
            ops = [alt.root_ops() for alt in self.alternatives]
            return None if None in ops else tuple(dict.fromkeys(o for alt in ops for o in alt))
        if self.kind != "node":
            raise ValueError("a pattern's root must match a node: Pat(op, ..) or Pat.either of those")
        if self.op is None:
            return None
        return (self.op,) if isinstance(self.op, str) else tuple(self.op)

    def _op_ok(self, op: str) -> bool:
        return self.op is None or (op == self.op if isinstance(self.op, str) else op in self.op)


@dataclass(frozen=True)
class Match:
    """One way a pattern matched at `root`: captured values and every node the match covers."""

    graph: Graph = field(repr=False)
    root: Node
    values: Mapping[str, str]
    nodes: tuple[Node, ...]

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def node(self, name: str) -> Node:
        """The node producing captured value `name` (an error for inputs and parameters)."""
        node = self.graph.producer(self.values[name])
        if node is None:
            raise KeyError(f"captured value '{name}' ('%{self.values[name]}') has no producer")
        return node


# matching state: (captures, matched nodes, values that must die with the match)
_State = tuple[dict[str, str], tuple[Node, ...], tuple[str, ...]]


def matches(graph: Graph, pattern: Pat, root: Node) -> Iterator[Match]:
    """Every match of `pattern` with `root` as its root node."""
    for binds, nodes, private in _match_node(graph, pattern, root, None, ({}, (), ())):
        covered = {n.name for n in nodes}
        if all(_dies_with(graph, v, covered) for v in private):
            yield Match(graph, root, binds, nodes)


def _dies_with(graph: Graph, value: str, covered: set[str]) -> bool:
    return value not in graph.outputs and all(u.name in covered for u in graph.users(value))


def _bind(pat: Pat, value: str, state: _State) -> _State | None:
    binds, nodes, private = state
    if pat.name is not None:
        if binds.get(pat.name, value) != value:
            return None
        binds = {**binds, pat.name: value}
    if pat.single_use:
        private = private + (value,)
    return binds, nodes, private


def _match_value(graph: Graph, pat: Pat, value: str, state: _State) -> Iterator[_State]:
    if pat.kind == "either":
        bound = _bind(pat, value, state)
        for alt in pat.alternatives if bound is not None else ():
            yield from _match_value(graph, alt, value, bound)
        return
    if pat.kind == "node":
        node = graph.producer(value)
        if node is not None:
            yield from _match_node(graph, pat, node, value, state)
        return
    if pat.kind == "param" and not graph.is_param(value):
        return
    if pat.where is not None and not pat.where(graph, value):
        return
    bound = _bind(pat, value, state)
    if bound is not None:
        yield bound


def _match_node(graph: Graph, pat: Pat, node: Node, value: str | None, state: _State) -> Iterator[_State]:
    """Match `pat` at `node`; `value` is the output that led here (None at the root)."""
    if pat.kind == "either":
        bound = _bind(pat, node.outputs[0] if value is None else value, state)
        for alt in pat.alternatives if bound is not None else ():
            yield from _match_node(graph, alt, node, value, bound)
        return
    if not pat._op_ok(node.op) or (pat.where is not None and not pat.where(graph, node)):
        return
    bound = _bind(pat, node.outputs[0] if value is None else value, state)
    if bound is None:
        return
    binds, nodes, private = bound
    bound = (binds, nodes + (node,), private)
    if pat.inputs is None:
        yield bound
        return
    if len(pat.inputs) != len(node.inputs):
        return
    orders = [pat.inputs]
    commutative = pat.commutative if pat.commutative is not None else node.op in COMMUTATIVE
    if commutative and len(pat.inputs) == 2 and node.inputs[0] != node.inputs[1]:
        orders.append(pat.inputs[::-1])
    for order in orders:
        yield from _match_inputs(graph, order, node.inputs, bound)


def _match_inputs(graph: Graph, pats: tuple[Pat, ...], values: tuple[str, ...], state: _State) -> Iterator[_State]:
    if not pats:
        yield state
        return
    for after_first in _match_value(graph, pats[0], values[0], state):
        yield from _match_inputs(graph, pats[1:], values[1:], after_first)


MatchFn = Callable[[Graph, Match], Replacement]


@dataclass(frozen=True)
class PatternRule:
    """`fn(graph, match)` is offered each match of `pattern` at a node; see `rewrite.Rule` for the reply."""

    pattern: Pat
    fn: MatchFn

    @property
    def ops(self) -> tuple[str, ...] | None:
        return self.pattern.root_ops()

    @property
    def name(self) -> str:
        return rule_name(self.fn)

    def apply(self, graph: Graph, node: Node) -> Replacement:
        for m in matches(graph, self.pattern, node):
            new = self.fn(graph, m)
            if new is not None:
                return new
        return None
