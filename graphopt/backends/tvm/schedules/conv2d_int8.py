"""Integer NCHW conv2d tensorized with the target's dot product (x86 VNNI ``vpdpbusd``, aarch64 ``sdot``).

Matches the kernel ``qdq-to-integer`` makes of a quantized conv: one reduction
block ``SSSSRRR`` summing ``int32(x) * int32(w)`` with x uint8 (x86) or int8
(aarch64), w a constant int8 ``[F, C, KH, KW]`` parameter, an int32
accumulator, optionally a padding block before and the requantisation
epilogue after. Output channels (per group) must be a multiple of the
instruction's lanes (x86: 16, or 8 on ymm; aarch64: 4) and input channels per group a multiple of 4;
other shapes go on to the generic rules.

Layouts, all inside the kernel (its inputs and outputs stay NCHW):

- weight ``[F/L, C/4, KH, KW, L, 4]``, packed once at build time (a block
  marked ``meta_schedule.layout_rewrite_preproc``, folded on the constant);
- activations ``[N, C/4, H, W, 4]`` (4 channels adjacent for one
  instruction), written by the padding block or by a copy of the input;
- accumulator ``[N, F/L, OH, OW, L]``.

Schedule: a register tile of ``f_v`` channel vectors by ``x_t`` output
columns (within the intrinsic's accumulator budget), the reduction
(C/4, KH, KW) outside the tile, batch x channel-blocks x rows in parallel,
the epilogue applied per tile while it is in cache.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import (
    GraphoptCPURule,
    extent,
    inline_epilogue,
    is_param,
    largest_divisor,
    main_reduction,
    parallel_vectorize_spatial,
    root_blocks,
    vector_lanes,
)
from .conv2d import LAYOUT_REWRITE_PREPROC
from .dot_product import DotProduct, dot_product_for


def _int8_conv(sch: s_tir.Schedule, target: Target):
    """(main index, blocks, intrinsic) when the kernel is an integer conv the target's dot product fits."""
    found = main_reduction(sch, lambda kinds: kinds == "SSSSRRR")
    if found is None:
        return None
    main, blocks = found
    info = blocks[main]
    block = sch.get(info.rv)
    if len(block.reads) != 2 or len(block.writes) != 1 or str(block.writes[0].source.dtype) != "int32":
        return None
    data, weight = (r.source for r in block.reads)
    loops = sch.get_loops(info.rv)
    sizes = [extent(sch, lp) for lp in loops]
    if any(s is None for s in sizes):
        return None
    _, f, _, _, rc, ry, rx = sizes
    dot = dot_product_for(target, str(data.dtype), str(weight.dtype), f)
    if dot is None:
        return None
    if f % dot.lanes or rc % dot.reduce or [int(d) for d in weight.shape] != [f, rc, ry, rx]:
        return None
    if not is_param(sch, weight):
        return None
    readers = [b for b in root_blocks(sch) if any(r.source.same_as(weight) for r in sch.get(b.rv).reads)]
    if len(readers) != 1:
        return None
    return main, blocks, dot


def _register_tile(f: int, width: int, dot: DotProduct) -> tuple[int, int]:
    """(channel vectors, output columns) of the register tile."""
    f_vectors = next(v for v in (2, 1) if (f // dot.lanes) % v == 0 and v * 4 <= dot.accumulators)
    return f_vectors, largest_divisor(width, dot.accumulators // f_vectors)


def schedule_int8_conv(sch: s_tir.Schedule, main_index: int, blocks, dot: DotProduct, lanes: int) -> None:
    """Pack the operands for ``dot`` and tensorize the conv's inner block with it."""
    main = blocks[main_index].rv
    epilogue = inline_epilogue(sch, blocks, main_index)
    lane, red = dot.lanes, dot.reduce
    data = sch.get(main).reads[0].source
    if is_param(sch, data):  # no padding block: copy the input into the packed layout
        sch.cache_read(main, 0, "global")
    sch.transform_layout(main, ("read", 0), lambda n, c, h, w: (n, c // red, h, w, c % red))
    packing = sch.cache_read(main, 1, "global")
    sch.transform_layout(main, ("read", 1), lambda f, c, ky, kx: (f // lane, c // red, ky, kx, f % lane, c % red))
    sch.annotate(packing, LAYOUT_REWRITE_PREPROC, True)
    if is_param(sch, sch.get(main).writes[0].source):
        epilogue = sch.cache_write(main, 0, "global")  # the kernel's output keeps its NCHW layout
    sch.transform_layout(main, ("write", 0), lambda n, f, y, x: (n, f // lane, y, x, f % lane))
    for b in root_blocks(sch):  # padding / packing copies of the activations
        if (
            b.is_spatial
            and not b.rv.same_as(main)
            and (epilogue is None or not sch.get(b.rv).same_as(sch.get(epilogue)))
        ):
            if sch.get(b.rv).annotations.get(LAYOUT_REWRITE_PREPROC) is None:
                parallel_vectorize_spatial(sch, b.rv, lanes)

    n, f, y, x, rc, ry, rx = sch.get_loops(main)
    f_vectors, x_t = _register_tile(extent(sch, f), extent(sch, x), dot)
    fo, f2, fi = sch.split(f, factors=[None, f_vectors, lane])
    xo, xi = sch.split(x, factors=[None, x_t])
    rco, rci = sch.split(rc, factors=[None, red])
    sch.reorder(n, fo, y, xo, rco, ry, rx, xi, f2, fi, rci)
    sch.parallel(sch.fuse(n, fo, y))
    sch.unroll(xi)
    sch.unroll(f2)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)
    init = sch.decompose_reduction(main, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(fi, dot.intrin)


class Conv2dInt8(GraphoptCPURule):
    """Integer conv2d on the target's dot-product instruction."""

    name = "conv2d-int8"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        found = _int8_conv(sch, target)
        if found is None:
            return None
        main, blocks, dot = found
        schedule_int8_conv(sch, main, blocks, dot, vector_lanes(target))
        return sch
