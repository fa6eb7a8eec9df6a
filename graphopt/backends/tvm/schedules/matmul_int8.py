"""Integer matmul / dense tensorized with the target's dot product (x86 VNNI ``vpdpbusd``, aarch64 ``sdot``).

Matches the kernel ``qdq-to-integer`` makes of a quantized linear layer: one
reduction block ``S...SR`` summing ``int32(a[..., i, k]) * int32(b[k, j])``
with ``a`` uint8 (x86) or int8 (aarch64) and contiguous along ``k``, ``b`` a
constant int8 ``[K, N]`` parameter read by this block alone, an int32
accumulator, and the requantisation epilogue after. ``N`` must be a multiple
of the instruction's lanes (x86: 16, or 8 on ymm; aarch64: 4) and ``K`` of 4; other shapes, and
products of two activations (attention), go on to the generic rules.

The weight is packed once at build time as ``[N/L, K/4, L, 4]`` (a block
marked ``meta_schedule.layout_rewrite_preproc``, folded on the constant);
activations and the accumulator keep their layouts (``a``'s 4 adjacent
``k`` and the accumulator's ``L`` adjacent ``j`` are what the instruction
reads and writes). Schedule: a register tile of ``i_t`` rows by ``j_v``
column vectors, the reduction outside the tile, batch x row-blocks x
column-blocks in parallel, the epilogue per tile.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import (
    MIN_PARALLEL_ELEMENTS,
    GraphoptCPURule,
    extent,
    inline_epilogue,
    largest_divisor,
    main_reduction,
    parallel_vectorize_spatial,
    root_blocks,
    vector_lanes,
)
from .conv2d import LAYOUT_REWRITE_PREPROC
from .dot_product import dot_product_for


def _indices_are(region, loop_vars: list) -> bool:
    """Whether a buffer region reads exactly the block variables ``loop_vars``, one element each."""
    if len(region.region) != len(loop_vars):
        return False
    for rng, var in zip(region.region, loop_vars):
        if not (isinstance(rng.min, tirx.Var) and rng.min.same_as(var)):
            return False
        if not (isinstance(rng.extent, tirx.IntImm) and int(rng.extent) == 1):
            return False
    return True


class MatmulInt8(GraphoptCPURule):
    """Integer matmul with a constant weight on the target's dot-product instruction."""

    name = "matmul-int8"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        found = main_reduction(sch, lambda kinds: len(kinds) >= 3 and kinds == "S" * (len(kinds) - 1) + "R")
        if found is None:
            return None
        main, blocks = found
        info = blocks[main]
        block = sch.get(info.rv)
        if len(block.reads) != 2 or str(block.writes[0].source.dtype) != "int32":
            return None
        a, b = block.reads
        dot = dot_product_for(target, str(a.source.dtype), str(b.source.dtype))
        if dot is None:
            return None
        ivars = [iv.var for iv in block.iter_vars]
        *batch_v, i_v, j_v, k_v = ivars
        if not _indices_are(b, [k_v, j_v]) or not any(p.same_as(b.source) for p in sch.mod["main"].params):
            return None
        if not (a.region and isinstance(a.region[-1].min, tirx.Var) and a.region[-1].min.same_as(k_v)):
            return None
        readers = [x for x in root_blocks(sch) if any(r.source.same_as(b.source) for r in sch.get(x.rv).reads)]
        loops = sch.get_loops(info.rv)
        sizes = [extent(sch, lp) for lp in loops]
        if len(readers) != 1 or any(s is None for s in sizes):
            return None
        rows, cols, depth = sizes[-3:]
        dot = dot_product_for(target, str(a.source.dtype), str(b.source.dtype), cols)
        if cols % dot.lanes or depth % dot.reduce:
            return None

        lanes = vector_lanes(target)
        for blk in blocks[:main]:
            parallel_vectorize_spatial(sch, blk.rv, lanes)
        epilogue = inline_epilogue(sch, blocks, main)
        lane, red = dot.lanes, dot.reduce
        packing = sch.cache_read(info.rv, 1, "global")
        sch.transform_layout(info.rv, ("read", 1), lambda k, j: (j // lane, k // red, j % lane, k % red))
        sch.annotate(packing, LAYOUT_REWRITE_PREPROC, True)

        *batch, i, j, k = sch.get_loops(info.rv)
        j_vectors = next(v for v in (2, 1) if (cols // lane) % v == 0)
        i_t = largest_divisor(rows, dot.accumulators // j_vectors)
        io, ii = sch.split(i, factors=[None, i_t])
        jo, j2, ji = sch.split(j, factors=[None, j_vectors, lane])
        ko, ki = sch.split(k, factors=[None, red])
        sch.reorder(*batch, io, jo, ko, ii, j2, ji, ki)
        outer = sch.fuse(*batch, io, jo)
        total = 1
        for s in sizes[:-1]:
            total *= s
        if total * depth >= MIN_PARALLEL_ELEMENTS:
            sch.parallel(outer)
        sch.unroll(ii)
        sch.unroll(j2)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, outer, preserve_unit_loops=True)
            epi_loops = sch.get_loops(epilogue)
            if extent(sch, epi_loops[-1]) == j_vectors * lane:
                sch.vectorize(epi_loops[-1])
        init = sch.decompose_reduction(info.rv, ko)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(ji, dot.intrin)
        return sch
