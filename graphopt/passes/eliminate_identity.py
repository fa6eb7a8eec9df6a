"""eliminate-identity: remove ops that return their input, and collapse reshape/permute chains.

A shape op whose output type equals its input type (same shape and dtype)
returns its input unchanged: reshape, flatten, (un)squeeze, expand, cast, and slice with a
positive step (n of n indices, in order, is all of them). Rules that would
make a graph output a graph input or a duplicate output are not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import Rule, apply_rules, replaceable


def _to_input(graph: Graph, node: Node) -> str | None:
    x = node.inputs[0]
    return x if replaceable(graph, node.output, x) else None


def drop_always(graph: Graph, node: Node) -> str | None:
    return _to_input(graph, node)


def drop_same_type(graph: Graph, node: Node) -> str | None:
    t_in, t_out = graph.value(node.inputs[0]).type, graph.value(node.output).type
    if t_in is None or t_in != t_out or (node.op == "slice" and node.attrs["step"] <= 0):
        return None
    return _to_input(graph, node)


def _perm(node: Node) -> list[int]:
    p = list(node.attrs["perm"])
    return [d % len(p) for d in p]


def _is_identity(perm: Sequence[int]) -> bool:
    return list(perm) == list(range(len(perm)))


def drop_identity_perm(graph: Graph, node: Node) -> str | None:
    return _to_input(graph, node) if _is_identity(_perm(node)) else None


def compose_permutes(graph: Graph, node: Node) -> str | None:
    inner = graph.producer(node.inputs[0])
    if inner is None or inner.op != "permute":
        return None
    p, q = _perm(inner), _perm(node)
    composed = [p[j] for j in q]  # y = x.permute(p); y.permute(q) = x.permute(p[q])
    if _is_identity(composed):
        x = inner.inputs[0]
        return x if replaceable(graph, node.output, x) else None
    if len(graph.users(inner.output)) > 1 or inner.output in graph.outputs:
        return None  # the inner permute stays for its other readers: nothing saved
    graph.rewrite_node(node, "permute", [inner.inputs[0]], {"perm": tuple(composed)})
    return node.output


def collapse_reshapes(graph: Graph, node: Node) -> str | None:
    inner = graph.producer(node.inputs[0])
    if inner is None or inner.op not in ("reshape", "flatten", "squeeze", "unsqueeze"):
        return None
    shape = node.attrs.get("shape")
    if node.op != "reshape" or 0 in shape:  # flatten / 0 ("copy this dim") depend on the inner shape
        out = graph.value(node.output).type
        if out is None or not out.is_static:
            return None
        shape = out.shape
    graph.rewrite_node(node, "reshape", [inner.inputs[0]], {"shape": tuple(shape)})
    return node.output


RULES = [
    Rule(("dropout", "identity"), drop_always),  # dropout(x) => x ; identity(x) => x
    Rule(
        ("reshape", "flatten", "squeeze", "unsqueeze", "expand", "cast", "slice"), drop_same_type
    ),  # op(x: T) -> T => x
    Rule("permute", drop_identity_perm),  # permute(x, [0, 1, .., n-1]) => x
    Rule("permute", compose_permutes),  # permute(permute(x, p), q) => x if p[q] = id else permute(x, p[q])
    Rule(("reshape", "flatten"), collapse_reshapes),  # reshape(reshape|flatten|(un)squeeze(x), s) => reshape(x, s)
]


@register_pass
@dataclass(frozen=True)
class EliminateIdentity(Pass):
    """Remove identity-like ops (dropout, no-op reshapes/casts/slices, inverse permutes).

    Stats: `removed` nodes taken out of the graph, `rewrites` rule applications
    (a collapsed chain whose inner node has other readers is a rewrite, not a removal).
    """

    name: ClassVar[str] = "eliminate-identity"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        before = len(graph.nodes)
        rewrites = apply_rules(graph, RULES)
        removed = before - len(graph.nodes)
        return PassResult(graph, rewrites > 0, {"removed": removed, "rewrites": rewrites})
