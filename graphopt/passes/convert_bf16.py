"""convert-bf16: weights and compute in bfloat16, with float32 islands (see `convert_half`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.convert_half import convert_to_half
from graphopt.passes.registry import register_pass


@register_pass
@dataclass(frozen=True)
class ConvertBf16(Pass):
    """Compute in bfloat16; softmax, normalisations, reductions and Q/DQ stay float32.

    The interface keeps its float32 dtypes. Stats: `params` converted, `casts`
    inserted, `overflowed` parameter elements, `float32_nodes` kept in float32.
    """

    name: ClassVar[str] = "convert-bf16"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = convert_to_half(graph, "bfloat16")
        return PassResult(graph, stats["params"] + stats["casts"] > 0, stats)

    def tolerance(self) -> Tolerance:
        return Tolerance.bounded(min_sqnr_db=25)
