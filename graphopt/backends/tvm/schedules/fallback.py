"""The generic fallback: every kernel no other rule took.

All-spatial blocks (copies, transposes, elementwise chains that were not
fused into a conv/matmul) are fused, vectorized on the innermost loop where
its extent allows and parallel over the rest; reduction blocks run their
leading spatial loops in parallel. Blocks that fit neither stay as they are.
A kernel is never left entirely as plain single-threaded loops unless it is
too small to be worth a thread.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import GraphoptCPURule, log, parallel_outer_spatial, parallel_vectorize_spatial, root_blocks, vector_lanes


class Fallback(GraphoptCPURule):
    """Parallel outer loops, vectorized inner loops, block by block."""

    name = "fallback"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        lanes = vector_lanes(target)
        blocks = root_blocks(sch)
        for b in blocks:
            if b.is_spatial:
                parallel_vectorize_spatial(sch, b.rv, lanes)
            elif b.kinds.startswith("S"):
                parallel_outer_spatial(sch, b)
        log.info("no specific rule for kernel (%s): generic schedule", ", ".join(b.name for b in blocks))
        return sch
