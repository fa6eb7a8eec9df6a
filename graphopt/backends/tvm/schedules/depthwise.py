"""Depthwise NCHW conv2d: one input channel per group (``group_conv2d_nchw`` with a unit channel reduction).

Each output channel reads only its own input channel, so there is no
channel reuse to exploit: the schedule vectorizes over output columns (a
divisor of the width up to the vector width), unrolls the small kernel
window, runs batch x channels x rows in parallel and applies the fused
epilogue per tile.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import (
    GraphoptCPURule,
    extent,
    inline_epilogue,
    main_reduction,
    parallel_vectorize_spatial,
    vector_lanes,
)
from .conv2d import schedule_conv_tile


class DepthwiseConv2dNCHW(GraphoptCPURule):
    """Depthwise conv2d with a fused elementwise epilogue."""

    name = "depthwise-conv2d"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        found = main_reduction(sch, lambda kinds: kinds in ("SSSSRRR", "SSSSRR"))
        if found is None:
            return None
        main, blocks = found
        info = blocks[main]
        loops = sch.get_loops(info.rv)
        # loops[0] is the batch: a symbolic batch (one build for every batch size) is only an outer parallel loop
        if any(extent(sch, lp) is None for lp in loops[1:]):
            return None
        if info.kinds == "SSSSRRR" and extent(sch, loops[4]) != 1:
            return None  # several input channels per group: the conv2d rule
        if len(sch.get(info.rv).reads) != 2:
            return None  # pooling reads one tensor
        lanes = vector_lanes(target)
        for b in blocks[:main]:
            parallel_vectorize_spatial(sch, b.rv, lanes)
        epilogue = inline_epilogue(sch, blocks, main)
        schedule_conv_tile(sch, info.rv, epilogue, lanes, f_tile_limit=1)
        return sch
