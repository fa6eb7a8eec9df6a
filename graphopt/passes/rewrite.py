"""Local rewrites as rule tables, applied by a worklist driver.

A rule names where it applies and a function that answers with the replacement:

- `Rule(op, fn)`: `fn(graph, node)` is tried on nodes whose op is `op` (a name,
  a tuple of names, or None for any op);
- `PatternRule(pattern, fn)` (`graphopt.passes.pattern`): `fn(graph, match)` is
  offered each match of a multi-node pattern rooted at a node.

The answer is the value (one per output, a tuple for several) that takes the
place of the node's outputs, or None for "no rewrite"; a function answering
None must have edited nothing.

    RULES = [
        Rule("dropout", lambda g, n: n.inputs[0]),  # dropout(x) => x
        PatternRule(Pat("add", (Pat("linear", (X, W), single_use=True), Pat.param("b"))),
                    absorb_bias),  # linear(x, W) + b => linear(x, W, b)
    ]
    count = apply_rules(graph, RULES)

`apply_rules` seeds a worklist with every node in graph order and pops until
it is empty, applying to each node the first rule (in table order) that
rewrites it. After a rewrite it pushes what the rewrite may have enabled: the
node itself when rewritten in place, the producers and readers of the
replacement values, and the producers of the node's former inputs and of
whatever died with it. A rewrite costs what it touches, so the driver does
O(nodes + rewrites) match attempts; a closing round over all nodes confirms the
fixpoint even when a rule edited beyond its match.

Guarantees:
- After a replacement every reader (graph outputs included) reads the new
  value; the node and whatever only it kept alive (producers and parameters
  nothing else reads) are removed. A rule may instead rewrite its node in place
  (`graph.rewrite_node`) and return the node's own outputs; the node then stays.
- Graph outputs stay values defined by nodes: a rule checks `replaceable`
  before it answers, and `apply_rules` raises if a replacement would make a
  graph output a graph input, a parameter or a duplicate of another output,
  or would change a value's type.
- More than MAX_REWRITES_PER_NODE rewrites per node means rules undo each other
  or keep matching their own result: a GraphError names them and the node.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from graphopt.errors import GraphError
from graphopt.ir.graph import Graph, Node

Replacement = str | Sequence[str] | None
RuleFn = Callable[[Graph, Node], Replacement]

MAX_REWRITES_PER_NODE = 16


class AnyRule(Protocol):
    """What `apply_rules` needs of a rule (`Rule`, `PatternRule`)."""

    @property
    def ops(self) -> tuple[str, ...] | None: ...  # root ops it may rewrite; None: any

    @property
    def name(self) -> str: ...

    def apply(self, graph: Graph, node: Node) -> Replacement: ...


def rule_name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or repr(fn)


@dataclass(frozen=True)
class Rule:
    """`fn` is tried on nodes whose op is `op` (a name, a tuple of names, or None for any)."""

    op: str | tuple[str, ...] | None
    fn: RuleFn

    def matches_op(self, op: str) -> bool:
        if self.op is None:
            return True
        return op == self.op if isinstance(self.op, str) else op in self.op

    @property
    def ops(self) -> tuple[str, ...] | None:
        return (self.op,) if isinstance(self.op, str) else self.op

    @property
    def name(self) -> str:
        return rule_name(self.fn)

    def apply(self, graph: Graph, node: Node) -> Replacement:
        return self.fn(graph, node)


def replaceable(graph: Graph, old: str, new: str) -> bool:
    """True when value `new` may take the place of `old` everywhere, graph outputs included.

    A graph output keeps being defined by a node: it is not replaced by a graph
    input, a parameter, or a value that is already a graph output.
    """
    return old not in graph.outputs or _output_ok(graph, new)


def _output_ok(graph: Graph, value: str) -> bool:
    return not (value in graph.inputs or graph.is_param(value) or value in graph.outputs)


def apply_rules(graph: Graph, rules: Sequence[AnyRule]) -> int:
    """Apply `rules` to a fixpoint; returns how many rewrites were made."""
    return _Driver(graph, rules).run()


class _Worklist:
    """Nodes to visit, first in first out, each queued at most once."""

    def __init__(self, nodes: Iterable[Node]):
        self._queue: deque[Node] = deque()
        self._queued: set[int] = set()
        self.extend(nodes)

    def extend(self, nodes: Iterable[Node]) -> None:
        for n in nodes:
            if id(n) not in self._queued:  # ids, not names: a freed name may be reused
                self._queued.add(id(n))
                self._queue.append(n)

    def pop(self) -> Node:
        node = self._queue.popleft()
        self._queued.discard(id(node))
        return node

    def __bool__(self) -> bool:
        return bool(self._queue)


class _Driver:
    def __init__(self, graph: Graph, rules: Sequence[AnyRule]):
        self.graph, self.rules = graph, list(rules)
        self.by_op: dict[str, list[AnyRule]] = {}
        self.count = 0
        self.limit = MAX_REWRITES_PER_NODE * (len(graph.nodes) + 4)
        self.recent: deque[str] = deque(maxlen=64)  # names of the rules that rewrote last

    def run(self) -> int:
        while True:  # each round starts from every node; the last one rewrites nothing
            before = self.count
            self._drain(_Worklist(self.graph.nodes))
            if self.count == before:
                return self.count

    def _rules_for(self, op: str) -> list[AnyRule]:
        found = self.by_op.get(op)
        if found is None:
            found = self.by_op[op] = [r for r in self.rules if r.ops is None or op in r.ops]
        return found

    def _drain(self, work: _Worklist) -> None:
        graph = self.graph
        while work:
            node = work.pop()
            if not (graph.has_node(node.name) and graph.node(node.name) is node):
                continue  # removed by an earlier rewrite
            for rule in self._rules_for(node.op):
                inputs = node.inputs
                new = rule.apply(graph, node)
                if new is not None:
                    self._count(rule, node)
                    work.extend(_replace(graph, node, inputs, (new,) if isinstance(new, str) else tuple(new)))
                    break

    def _count(self, rule: AnyRule, node: Node) -> None:
        self.count += 1
        self.recent.append(rule.name)
        if self.count > self.limit:
            names = ", ".join(f"'{n}'" for n, _ in Counter(self.recent).most_common(3))
            raise GraphError(
                f"rewrite rules did not reach a fixpoint after {self.count} rewrites: "
                f"rule(s) {names} keep rewriting (a rule matching its own result, or "
                f"rules undoing each other; the last rewrite was at node '{node.name}')"
            )


def _replace(graph: Graph, node: Node, inputs: tuple[str, ...], new: tuple[str, ...]) -> list[Node]:
    """Put `new` in place of `node`'s outputs (`inputs`: its inputs before the rule ran).

    Returns the nodes the rewrite may have given a new match.
    """
    if new != node.outputs:
        _check_replacement(graph, node, new)
        for old, value in zip(node.outputs, new):
            if old != value:
                graph.replace_all_uses(old, value)
        if not any(graph.is_used(o) for o in node.outputs):
            graph.remove_node(node)
    touched = _remove_orphans(graph, inputs) + list(new)
    found = [node] if graph.has_node(node.name) and graph.node(node.name) is node else []
    for v in dict.fromkeys(touched):
        if v in graph.values:
            found.extend(p for p in (graph.producer(v),) if p is not None)
    for v in new:
        found.extend(graph.users(v))
    return found


def _check_replacement(graph: Graph, node: Node, new: tuple[str, ...]) -> None:
    if len(new) != len(node.outputs):
        raise GraphError(
            f"a rule replaced the {len(node.outputs)} outputs of node '{node.name}' with {len(new)} values"
        )
    for old, value in zip(node.outputs, new):
        if old != value and old in graph.outputs and not _output_ok(graph, value):
            raise GraphError(
                f"a rule would make graph output '%{old}' of node '{node.name}' "
                f"the input, parameter or output '%{value}'"
            )
        t_old, t_new = graph.value(old).type, graph.value(value).type
        if t_old is not None and t_new is not None and t_old != t_new:
            raise GraphError(
                f"a rule replaced '%{old}' ({t_old}) of node '{node.name}' "
                f"with '%{value}' of a different type ({t_new})"
            )


def _remove_orphans(graph: Graph, values: Sequence[str]) -> list[str]:
    """Remove producers and parameters of `values` that nothing reads any more (transitively).

    Returns the values visited, so the caller can revisit the producers that stayed.
    """
    stack = list(dict.fromkeys(values))
    seen: list[str] = []
    while stack:
        v = stack.pop()
        seen.append(v)
        if v not in graph.values or graph.is_used(v) or v in graph.inputs:
            continue
        if graph.is_param(v):
            graph.remove_param(v)
            continue
        prod = graph.producer(v)
        if prod is not None and not any(graph.is_used(o) for o in prod.outputs):
            graph.remove_node(prod)
            stack.extend(prod.inputs)
    return seen
