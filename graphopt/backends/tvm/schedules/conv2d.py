"""Direct NCHW conv2d (any stride, dilation, padding, groups with several input channels per group).

Matches a kernel with one reduction block of iterators ``SSSSRRR`` (n, f, y,
x, rc, ry, rx: what ``conv2d_nchw`` and ``group_conv2d_nchw`` legalize to),
optionally preceded by the padding block and followed by elementwise blocks
(bias, residual add, relu/clip) that Relax fused in.

Schedule: a register tile of ``f_t`` output channels by ``x_t`` output
columns (``x_t`` a divisor of the width close to two vectors, vectorized;
``f_t`` unrolled), the reduction (rc, ry, rx) outside the tile so each input
vector is reused by ``f_t`` FMAs; the epilogue runs on the tile while it is
in cache; batch x channel-blocks x rows in parallel; the padding copy
parallel and vectorized.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import (
    GraphoptCPURule,
    extent,
    inline_epilogue,
    largest_divisor,
    main_reduction,
    parallel_vectorize_spatial,
    root_blocks,
    vector_lanes,
)

# Annotation read by Relax's SplitLayoutRewritePreproc: the block moves into its
# own kernel, which FoldConstant then runs at build time on constant weights.
LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"


def pack_weight(sch: s_tir.Schedule, main, read_index: int, block: int) -> None:
    """Repack the [F, C, KH, KW] weight as [F/block, C, KH, KW, block] (done once at build time)."""
    cache = sch.cache_read(main, read_index, "global")
    sch.transform_layout(main, ("read", read_index), lambda f, c, ky, kx: (f // block, c, ky, kx, f % block))
    sch.annotate(cache, LAYOUT_REWRITE_PREPROC, True)


def schedule_channel_vectors(sch: s_tir.Schedule, main, epilogue, f_vec: int) -> None:
    """Vectorize over output channels (packed weights): tile 2 channel vectors x up to 7 columns."""
    n, f, y, x, *red = sch.get_loops(main)
    channels, width = extent(sch, f), extent(sch, x)
    f_vectors = 2 if channels % (2 * f_vec) == 0 else 1
    x_t = largest_divisor(width, 14 // f_vectors)
    output = sch.get(main).writes[0].source
    if any(p.same_as(output) for p in sch.mod["main"].params):
        epilogue = sch.cache_write(main, 0, "global")  # the kernel's output keeps its NCHW layout
    sch.transform_layout(main, ("write", 0), lambda n_, f_, y_, x_: (n_, f_ // f_vec, y_, x_, f_ % f_vec))
    pack_weight(sch, main, 1, f_vec)
    fo, f2, fi = sch.split(f, factors=[None, f_vectors, f_vec])
    xo, xi = sch.split(x, factors=[None, x_t])
    sch.reorder(n, fo, y, xo, *red, xi, f2, fi)
    sch.parallel(sch.fuse(n, fo, y))
    for r in red[1:]:
        if (extent(sch, r) or 99) <= 7:
            sch.unroll(r)
    sch.unroll(xi)
    sch.unroll(f2)
    sch.vectorize(fi)
    init = sch.decompose_reduction(main, red[0])
    sch.vectorize(sch.get_loops(init)[-1])
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)


def schedule_conv_tile(sch: s_tir.Schedule, main, epilogue, lanes: int, *, f_tile_limit: int) -> None:
    """Tile loops (n, f, y, x, r...) of a conv-like block, vectorized over output columns; shared with depthwise."""
    n, f, y, x, *red = sch.get_loops(main)
    width = extent(sch, x)
    x_t = largest_divisor(width, lanes)
    vectors = -(-x_t // lanes)
    f_t = largest_divisor(extent(sch, f), max(f_tile_limit // vectors, 1))
    fo, fi = sch.split(f, factors=[None, f_t])
    xo, xi = sch.split(x, factors=[None, x_t])
    sch.reorder(n, fo, y, xo, *red, fi, xi)
    sch.parallel(sch.fuse(n, fo, y))
    for r in red[1:]:
        if (extent(sch, r) or 99) <= 7:
            sch.unroll(r)
    if f_t > 1:
        sch.unroll(fi)
    sch.vectorize(xi)
    init = sch.decompose_reduction(main, red[0])
    sch.vectorize(sch.get_loops(init)[-1])
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(epilogue)[-1])


def _packable_weight(sch: s_tir.Schedule, info, loops) -> bool:
    """Whether the block's second read is a [F, C, KH, KW] kernel parameter that only this block reads."""
    reads = sch.get(info.rv).reads
    if len(reads) != 2:
        return False
    weight = reads[1].source
    func = sch.mod["main"]
    if not any(p.same_as(weight) for p in func.params):
        return False
    f, rc, ry, rx = (extent(sch, loops[i]) for i in (1, 4, 5, 6))
    if [int(d) for d in weight.shape] != [f, rc, ry, rx]:
        return False
    readers = [b for b in root_blocks(sch) if any(r.source.same_as(weight) for r in sch.get(b.rv).reads)]
    return len(readers) == 1


class Conv2dNCHW(GraphoptCPURule):
    """Direct NCHW conv2d with a fused elementwise epilogue."""

    name = "conv2d"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        found = main_reduction(sch, lambda kinds: kinds == "SSSSRRR")
        if found is None:
            return None
        main, blocks = found
        info = blocks[main]
        loops = sch.get_loops(info.rv)
        # loops[0] is the batch: a symbolic batch (one build for every batch size) is only an outer parallel loop
        if extent(sch, loops[4]) in (None, 1) or any(extent(sch, lp) is None for lp in loops[1:]):
            return None  # depthwise (one input channel per group) has its own rule
        lanes = vector_lanes(target)
        for b in blocks[:main]:
            parallel_vectorize_spatial(sch, b.rv, lanes)
        epilogue = inline_epilogue(sch, blocks, main)
        channels = extent(sch, loops[1])
        f_vec = next((v for v in (lanes, lanes // 2) if channels % v == 0), None)
        if f_vec is not None and _packable_weight(sch, info, loops):
            schedule_channel_vectors(sch, info.rv, epilogue, f_vec)
        else:
            schedule_conv_tile(sch, info.rv, epilogue, lanes, f_tile_limit=16)
        return sch
