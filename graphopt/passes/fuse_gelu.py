"""fuse-gelu: recognise GELU written out in primitive ops and make it one `gelu` node.

Exact GELU is `x * 0.5 * (1 + erf(x / sqrt(2)))`: ONNX exports before opset 20
and hand-written activations (BERT-style `gelu` functions) arrive so. The tanh
approximation `x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`
becomes `gelu{approximate=tanh}`. Every grouping of the three factors matches,
in either operand order; `x / sqrt(2)` may be `x * (1 / sqrt(2))` and `x^3`
may be `x * (x * x)`.
Irrational constants match within 1e-6 relative (their float32 roundings).
Intermediate results read outside the pattern keep it from matching, and the
result must have x's type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.pattern import Match, Pat, PatternRule
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import apply_rules

REL = 1e-6  # constants are compared within this relative error
X = Pat.any("x")
HALF = Pat.const(0.5)


def _inner(op: str, arg: Pat) -> Pat:
    """1 + op(arg), read by the product alone."""
    return Pat("add", (Pat(op, (arg,), single_use=True), Pat.const(1.0)), single_use=True)


def _half_x_times(h: Pat) -> Pat:
    """x * 0.5 * h, grouped any way: (x * h) * 0.5, (x * 0.5) * h, x * (h * 0.5)."""
    return Pat.either(
        Pat("mul", (Pat("mul", (X, h), single_use=True), HALF)),
        Pat("mul", (Pat("mul", (X, HALF), single_use=True), h)),
        Pat("mul", (X, Pat("mul", (h, HALF), single_use=True))),
    )


ERF_ARG = Pat.either(
    Pat("div", (X, Pat.const(math.sqrt(2), rel=REL)), single_use=True),
    Pat("mul", (X, Pat.const(math.sqrt(0.5), rel=REL)), single_use=True),
)
CUBE = Pat.either(
    Pat("pow", (X, Pat.const(3.0)), single_use=True),  # x^3 or x * (x * x), any grouping
    Pat("mul", (X, Pat("mul", (X, X), single_use=True)), single_use=True),
)
TANH_ARG = Pat(
    "mul",
    (
        Pat("add", (X, Pat("mul", (CUBE, Pat.const(0.044715, rel=REL)), single_use=True)), single_use=True),
        Pat.const(math.sqrt(2 / math.pi), rel=REL),
    ),
    single_use=True,
)


def to_gelu(graph: Graph, m: Match, approximate: str) -> str | None:
    x, out = m["x"], m.root.output
    if graph.value(x).type != graph.value(out).type:
        return None  # the constants broadcast x to another shape or dtype
    graph.rewrite_node(m.root, "gelu", [x], {"approximate": approximate})
    return out


RULES = [
    PatternRule(
        _half_x_times(_inner("erf", ERF_ARG)), partial(to_gelu, approximate="none")
    ),  # x * 0.5 * (1 + erf(x / sqrt2)) => gelu(x)
    PatternRule(
        _half_x_times(_inner("tanh", TANH_ARG)), partial(to_gelu, approximate="tanh")
    ),  # x * 0.5 * (1 + tanh(c * (x + k x^3))) => gelu{tanh}(x)
]


@register_pass
@dataclass(frozen=True)
class FuseGelu(Pass):
    """Turn GELU written in primitive ops (erf or tanh form) into `gelu`. Stats: `fused`."""

    name: ClassVar[str] = "fuse-gelu"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        fused = apply_rules(graph, RULES)
        return PassResult(graph, fused > 0, {"fused": fused})
