"""Dense / matmul / batched matmul: ``C[b..., i, j] += A[b..., i, k] * B[b..., k, j]`` with a fused epilogue.

Matches one reduction block whose iterators are spatial then one reduction
(``S...SR``, at least two spatial). Schedule: a register tile of ``i_t`` rows
by ``j_t`` columns (``j_t`` up to two vectors, vectorized; ``i_t`` unrolled),
the reduction outside the tile, batch x row-blocks x column-blocks in
parallel, the epilogue (bias, activation, residual) applied per tile.
When B is stored ``[j, k]`` (k contiguous) the j loads are strided: still
correct, slower; such kernels are rare after graphopt's passes.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import (
    MIN_PARALLEL_ELEMENTS,
    GraphoptCPURule,
    extent,
    inline_epilogue,
    largest_divisor,
    main_reduction,
    parallel_vectorize_spatial,
    vector_lanes,
)


class Matmul(GraphoptCPURule):
    """Matmul-like kernels (linear layers, attention products)."""

    name = "matmul"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        found = main_reduction(sch, lambda kinds: len(kinds) >= 3 and kinds == "S" * (len(kinds) - 1) + "R")
        if found is None:
            return None
        main, blocks = found
        info = blocks[main]
        if len(sch.get(info.rv).reads) != 2:
            return None
        loops = sch.get_loops(info.rv)
        sizes = [extent(sch, lp) for lp in loops]
        if any(s is None for s in sizes):
            return None
        lanes = vector_lanes(target)
        for b in blocks[:main]:
            parallel_vectorize_spatial(sch, b.rv, lanes)
        epilogue = inline_epilogue(sch, blocks, main)
        *batch, i, j, k = loops
        rows, cols = sizes[-3], sizes[-2]
        j_t = largest_divisor(cols, 2 * lanes)
        if j_t < lanes // 2 and cols > lanes:
            j_t = 1  # no usable vector factor: keep columns scalar rather than odd vector shapes
        vectors = max(-(-j_t // lanes), 1)
        i_t = largest_divisor(rows, 12 // vectors)
        io, ii = sch.split(i, factors=[None, i_t])
        jo, ji = sch.split(j, factors=[None, j_t])
        sch.reorder(*batch, io, jo, k, ii, ji)
        outer = sch.fuse(*batch, io, jo)
        total = 1
        for s in sizes[:-1]:
            total *= s
        if total * sizes[-1] >= MIN_PARALLEL_ELEMENTS:
            sch.parallel(outer)
        sch.unroll(ii)
        if j_t > 1:
            sch.vectorize(ji)
        init = sch.decompose_reduction(info.rv, k)
        if j_t > 1:
            sch.vectorize(sch.get_loops(init)[-1])
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, outer, preserve_unit_loops=True)
            epi_loops = sch.get_loops(epilogue)
            if j_t > 1 and extent(sch, epi_loops[-1]) == j_t:
                sch.vectorize(epi_loops[-1])
        return sch
