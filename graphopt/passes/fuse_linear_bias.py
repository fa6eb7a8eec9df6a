"""fuse-linear-bias: fold a bias added after a bias-free linear into the linear.

`linear(x, W) + b` is how exporters write `nn.Linear` on inputs of rank > 2
(ONNX MatMul + Add) and how `F.linear(x, W) + b` traces. When `b` is a
parameter of shape `[out]` with W's dtype and the linear's result is read by
the add alone, the add becomes `linear(x, W, b)` (keeping the linear's
provenance) and the bias-free linear goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.pattern import Match, Pat, PatternRule
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import apply_rules


def absorb_bias(graph: Graph, m: Match) -> str | None:
    w, b = graph.value(m["w"]).type, graph.value(m["b"]).type
    if w is None or b is None or w.rank != 2 or b.shape != (w.shape[0],) or b.dtype != w.dtype:
        return None
    lin, add = m.node("lin"), m.root
    graph.rewrite_node(add, "linear", [m["x"], m["w"], m["b"]])
    add.meta.update(lin.meta)
    return add.output


BIAS_FREE_LINEAR = Pat("linear", (Pat.any("x"), Pat.any("w")), name="lin", single_use=True)
RULES = [
    PatternRule(Pat("add", (BIAS_FREE_LINEAR, Pat.param("b"))), absorb_bias),  # linear(x, W) + b => linear(x, W, b)
]


@register_pass
@dataclass(frozen=True)
class FuseLinearBias(Pass):
    """Fold `linear(x, W) + b` into `linear(x, W, b)`. Stats: `fused` biases."""

    name: ClassVar[str] = "fuse-linear-bias"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        fused = apply_rules(graph, RULES)
        return PassResult(graph, fused > 0, {"fused": fused})
