"""fuse-layer-norm: recognise layer norm written out in primitive ops and make it one node.

`(x - E[x]) / sqrt(Var[x] + eps)` with `E` a keepdim mean over x's trailing
dims and `Var[x] = E[(x - E[x])^2]` becomes `layer_norm(x)`; the square may be
`pow(c, 2)` or `c * c`, and `/ sqrt(v)` may be `* rsqrt(v)`, `* reciprocal(sqrt(v))`
or `* (1 / sqrt(v))`. An elementwise weight and then a bias of the normalized
shape are absorbed by two more rules: `layer_norm(x) * w => layer_norm(x, w)`,
`layer_norm(x, w) + b => layer_norm(x, w, b)`.
This is how LayerNorm arrives from ONNX exports before opset 17 and from
hand-written modules; `x - E[x]` may be computed once or twice. Nothing read
outside the pattern may be removed, the normalized shape must be static, and
eps must be a parameter holding one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.pattern import Match, Pat, PatternRule, const_value
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import apply_rules


def _trailing_shape(graph: Graph, mean: Node) -> list[int] | None:
    """The static shape a keepdim mean reduces when its dims are the trailing ones, else None."""
    t = graph.value(mean.inputs[0]).type
    if not mean.attrs["keepdim"] or t is None or not mean.attrs["dims"]:
        return None
    dims = sorted(d % t.rank for d in mean.attrs["dims"])
    shape = list(t.shape[dims[0] :])
    if dims != list(range(t.rank - len(dims), t.rank)) or not all(isinstance(d, int) for d in shape):
        return None
    return shape


X = Pat.any("x")


def _centred(mean: str, name: str | None = None) -> Pat:
    """x - E[x], E[x] captured as `mean`."""
    return Pat("sub", (X, Pat("mean", (X,), name=mean, single_use=True)), name=name, single_use=True)


SQUARE = Pat.either(
    Pat("pow", (_centred("mean_v"), Pat.const(2.0)), single_use=True),
    Pat("mul", (_centred("mean_v", name="c"), Pat.any("c")), single_use=True),
)
SHIFTED_VAR = Pat(
    "add", (Pat("mean", (SQUARE,), name="var", single_use=True), Pat.param("eps")), single_use=True
)  # Var[x] + eps
STD = Pat("sqrt", (SHIFTED_VAR,), single_use=True)
INV_STD = Pat.either(
    Pat("rsqrt", (SHIFTED_VAR,), single_use=True),
    Pat("reciprocal", (STD,), single_use=True),
    Pat("div", (Pat.const(1.0), STD), single_use=True),
)
NORMALIZED = Pat.either(Pat("div", (_centred("mean"), STD)), Pat("mul", (_centred("mean"), INV_STD)))


def to_layer_norm(graph: Graph, m: Match) -> str | None:
    shape, eps = _trailing_shape(graph, m.node("mean")), const_value(graph, m["eps"])
    x, out = m["x"], m.root.output
    same_dims = all(_trailing_shape(graph, m.node(k)) == shape for k in ("mean_v", "var"))
    if (
        shape is None
        or eps is None
        or graph.param(m["eps"]).data.size != 1
        or not same_dims
        or graph.value(x).type != graph.value(out).type
    ):
        return None
    graph.rewrite_node(m.root, "layer_norm", [x], {"normalized_shape": shape, "eps": eps})
    return out


def absorb_affine(graph: Graph, m: Match) -> str | None:
    ln, p, out = m.node("ln"), m["p"], m.root.output
    t, t_out = graph.value(p).type, graph.value(out).type
    if (
        t is None
        or list(t.shape) != list(ln.attrs["normalized_shape"])
        or t_out is None
        or t.dtype != t_out.dtype
        or t_out != graph.value(ln.output).type
    ):
        return None
    graph.rewrite_node(m.root, "layer_norm", [*ln.inputs, p], ln.attrs)
    m.root.meta.update(ln.meta)
    return out


RULES = [
    PatternRule(NORMALIZED, to_layer_norm),  # (x - E[x]) / sqrt(Var[x] + eps) => layer_norm(x)
    PatternRule(
        Pat("mul", (Pat("layer_norm", (X,), name="ln", single_use=True), Pat.param("p"))), absorb_affine
    ),  # layer_norm(x) * w => layer_norm(x, w)
    PatternRule(
        Pat("add", (Pat("layer_norm", (X, Pat.any()), name="ln", single_use=True), Pat.param("p"))), absorb_affine
    ),  # layer_norm(x, w) + b => layer_norm(x, w, b)
]


@register_pass
@dataclass(frozen=True)
class FuseLayerNorm(Pass):
    """Turn layer norm written in primitive ops into `layer_norm`.

    Stats: `fused` layer norms made, `affine` weights and biases absorbed into layer norms.
    """

    name: ClassVar[str] = "fuse-layer-norm"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        before = graph.op_counts().get("layer_norm", 0)
        rewrites = apply_rules(graph, RULES)
        fused = graph.op_counts().get("layer_norm", 0) - before
        return PassResult(graph, rewrites > 0, {"fused": fused, "affine": rewrites - fused})
