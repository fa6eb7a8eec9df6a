"""Local rewrites as rule tables.

A `Rule` is a pattern (the op a node must have) and a function
`fn(graph, node) -> replacement | None`. The replacement is the value (one per
output, as a tuple for several) that takes the place of the node's outputs;
None means "no match" and the function must then have edited nothing.

    RULES = [
        Rule("dropout", lambda g, n: n.inputs[0]),  # dropout(x) => x
        Rule("batch_norm", fold_into_conv),         # batch_norm(conv(x, w, b)) => conv(x, w', b')
    ]
    count = apply_rules(graph, RULES)

`apply_rules` visits nodes in order and applies the first rule that matches,
sweeping until no rule matches anywhere (a fixpoint). After a replacement it
rewires every reader (graph outputs included), removes the node and whatever
only that node kept alive (producers and parameters nothing else reads).
A rule may also rewrite its node in place (`graph.rewrite_node`) and return
the node's own outputs; the node then stays. Graph outputs stay values
defined by nodes: a rule checks `replaceable` before it answers, and
`apply_rules` raises if a replacement would make a graph output a graph
input, a parameter or a duplicate of another output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from graphopt.errors import GraphError
from graphopt.ir.graph import Graph, Node

Replacement = str | Sequence[str] | None
RuleFn = Callable[[Graph, Node], Replacement]

MAX_SWEEPS = 1000


@dataclass(frozen=True)
class Rule:
    """`fn` is tried on nodes whose op is `op` (a name, a tuple of names, or None for any)."""

    op: str | tuple[str, ...] | None
    fn: RuleFn

    def matches_op(self, op: str) -> bool:
        if self.op is None:
            return True
        return op == self.op if isinstance(self.op, str) else op in self.op


def replaceable(graph: Graph, old: str, new: str) -> bool:
    """True when value `new` may take the place of `old` everywhere, graph outputs included.

    A graph output keeps being defined by a node: it is not replaced by a graph
    input, a parameter, or a value that is already a graph output.
    """
    return old not in graph.outputs or _output_ok(graph, new)


def _output_ok(graph: Graph, value: str) -> bool:
    return not (value in graph.inputs or graph.is_param(value) or value in graph.outputs)


def apply_rules(graph: Graph, rules: Sequence[Rule]) -> int:
    """Apply `rules` to a fixpoint; returns how many rewrites were made."""
    total = 0
    for _ in range(MAX_SWEEPS):
        count = _sweep(graph, rules)
        if count == 0:
            return total
        total += count
    raise GraphError(f"rewrite rules did not reach a fixpoint after {MAX_SWEEPS} sweeps "
                     f"(a rule keeps matching its own result)")


def _sweep(graph: Graph, rules: Sequence[Rule]) -> int:
    count = 0
    for node in graph.nodes:
        if not (graph.has_node(node.name) and graph.node(node.name) is node):
            continue  # removed by an earlier rewrite in this sweep
        for rule in rules:
            if rule.matches_op(node.op):
                inputs = node.inputs
                new = rule.fn(graph, node)
                if new is not None:
                    _replace(graph, node, inputs, (new,) if isinstance(new, str) else tuple(new))
                    count += 1
                    break
    return count


def _replace(graph: Graph, node: Node, inputs: tuple[str, ...], new: tuple[str, ...]) -> None:
    """Put `new` in place of `node`'s outputs; `inputs` are the node's inputs before the rule ran."""
    if new == node.outputs:  # rewritten in place
        _remove_orphans(graph, inputs)
        return
    if len(new) != len(node.outputs):
        raise GraphError(f"a rule replaced the {len(node.outputs)} outputs of node '{node.name}' "
                         f"with {len(new)} values")
    for old, value in zip(node.outputs, new):
        if old != value and old in graph.outputs and not _output_ok(graph, value):
            raise GraphError(f"a rule would make graph output '%{old}' of node '{node.name}' "
                             f"the input, parameter or output '%{value}'")
        t_old, t_new = graph.value(old).type, graph.value(value).type
        if t_old is not None and t_new is not None and t_old != t_new:
            raise GraphError(f"a rule replaced '%{old}' ({t_old}) of node '{node.name}' "
                             f"with '%{value}' of a different type ({t_new})")
    for old, value in zip(node.outputs, new):
        if old != value:
            graph.replace_all_uses(old, value)
    if not any(graph.is_used(o) for o in node.outputs):
        graph.remove_node(node)
        _remove_orphans(graph, inputs)


def _remove_orphans(graph: Graph, values: Sequence[str]) -> None:
    """Remove producers and parameters of `values` that nothing reads any more (transitively)."""
    stack = list(dict.fromkeys(values))
    while stack:
        v = stack.pop()
        if v not in graph.values or graph.is_used(v) or v in graph.inputs:
            continue
        if graph.is_param(v):
            graph.remove_param(v)
            continue
        prod = graph.producer(v)
        if prod is not None and not any(graph.is_used(o) for o in prod.outputs):
            graph.remove_node(prod)
            stack.extend(prod.inputs)
