"""Reductions: softmax / layer norm (dlight's CPU rule) and pooling / mean over spatial axes.

Softmax, layer norm and similar kernels (reduction blocks feeding
elementwise ones over the same leading axes) go to TVM's
``dlight.cpu.Reduction``: leading axes in parallel, elementwise parts
vectorized. Any other kernel whose reduction blocks keep their leading axes
spatial (max/avg pooling, global mean, sums) is parallelized over those
axes, elementwise blocks parallel and vectorized.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .common import GraphoptCPURule, parallel_outer_spatial, parallel_vectorize_spatial, root_blocks, vector_lanes


class Reduction(GraphoptCPURule):
    """Softmax / layer norm / pooling / mean."""

    name = "reduction"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        blocks = root_blocks(sch)
        if not any(b.is_reduction for b in blocks) or any("O" in b.kinds for b in blocks):
            return None
        if not all(b.kinds.startswith("S") for b in blocks):
            return None  # a full reduction to a scalar: nothing to parallelize over
        if len(blocks) >= 2 and not blocks[-1].is_reduction:
            normed = dl.cpu.Reduction().apply(sch.mod["main"], target, False)
            if normed is not None:
                return normed
        lanes = vector_lanes(target)
        for b in blocks:
            if b.is_spatial:
                parallel_vectorize_spatial(sch, b.rv, lanes)
            else:
                parallel_outer_spatial(sch, b)
        return sch
