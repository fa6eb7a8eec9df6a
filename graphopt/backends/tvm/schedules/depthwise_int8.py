"""Integer depthwise NCHW conv2d, vectorized over channels.

Matches the kernel ``qdq-to-integer`` makes of a quantized depthwise conv:
one reduction block ``SSSSRRR`` (unit channel reduction) or ``SSSSRR``
summing ``int32(x) * int32(w)`` with x int8 or uint8, w a constant int8
``[C, 1, KH, KW]`` parameter (one output channel per input channel), an
int32 accumulator, optionally the padding block before and the
requantisation epilogue after. Channels must be a multiple of the int32
vector width (or half of it); other shapes go on to the generic depthwise rule.

Each output channel reads only its own input channel, so the vector runs
over channels, as onnxruntime's depthwise kernels do: inside the kernel the
activations are ``[N, C/L, H, W, L]`` (written by the padding block or a copy
of the input), the weight ``[C/L, 1, KH, KW, L]`` (packed once at build
time) and the accumulator ``[N, C/L, OH, OW, L]``. Every tap is then one
contiguous load of ``L`` bytes, widened to int32, and one multiply-add per
output column, whatever the stride. Register tile: ``x_t`` output columns of
one channel vector; the window (KH, KW) outside it, unrolled; batch x
channel-blocks x rows in parallel; the epilogue per tile.
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

_INTEGER = ("int8", "uint8")
# Output columns per register tile: one int32 accumulator vector each (x86 has 32 zmm, aarch64 32 v).
_COLUMNS = 8


def _int8_depthwise(sch: s_tir.Schedule, lanes: int):
    """(main index, blocks, channel vector) when the kernel is an integer depthwise conv this rule takes."""
    found = main_reduction(sch, lambda kinds: kinds in ("SSSSRRR", "SSSSRR"))
    if found is None:
        return None
    main, blocks = found
    info = blocks[main]
    block = sch.get(info.rv)
    if len(block.reads) != 2 or len(block.writes) != 1 or str(block.writes[0].source.dtype) != "int32":
        return None
    data, weight = (r.source for r in block.reads)
    if str(data.dtype) not in _INTEGER or str(weight.dtype) != "int8" or not is_param(sch, weight):
        return None
    sizes = [extent(sch, lp) for lp in sch.get_loops(info.rv)]
    if any(s is None for s in sizes):
        return None
    if info.kinds == "SSSSRRR" and sizes[4] != 1:
        return None  # several input channels per group: a conv rule
    channels, ky, kx = sizes[1], sizes[-2], sizes[-1]
    if len(data.shape) != 4 or int(data.shape[1]) != channels:
        return None  # a channel multiplier: output channel f reads input channel f // m
    if [int(d) for d in weight.shape] != [channels, 1, ky, kx]:
        return None
    readers = [b for b in root_blocks(sch) if any(r.source.same_as(weight) for r in sch.get(b.rv).reads)]
    if len(readers) != 1:
        return None
    vec = next((v for v in (lanes, lanes // 2) if v >= 4 and channels % v == 0), None)
    return None if vec is None else (main, blocks, vec)


def schedule_int8_depthwise(sch: s_tir.Schedule, main_index: int, blocks, vec: int, lanes: int) -> None:
    """Channel-blocked layouts and the channel-vector tile (see the module docstring)."""
    main = blocks[main_index].rv
    epilogue = inline_epilogue(sch, blocks, main_index)
    if is_param(sch, sch.get(main).reads[0].source):  # no padding block: copy the input into the blocked layout
        sch.cache_read(main, 0, "global")
    sch.transform_layout(main, ("read", 0), lambda n, c, h, w: (n, c // vec, h, w, c % vec))
    packing = sch.cache_read(main, 1, "global")
    sch.transform_layout(main, ("read", 1), lambda f, c, ky, kx: (f // vec, c, ky, kx, f % vec))
    sch.annotate(packing, LAYOUT_REWRITE_PREPROC, True)
    if is_param(sch, sch.get(main).writes[0].source):
        epilogue = sch.cache_write(main, 0, "global")  # the kernel's output keeps its NCHW layout
    sch.transform_layout(main, ("write", 0), lambda n, f, y, x: (n, f // vec, y, x, f % vec))
    last = None if epilogue is None else sch.get(epilogue)
    for b in root_blocks(sch):  # the padding / blocking copy of the activations
        block = sch.get(b.rv)
        if b.is_spatial and not b.rv.same_as(main) and not (last is not None and block.same_as(last)):
            if block.annotations.get(LAYOUT_REWRITE_PREPROC) is None:
                parallel_vectorize_spatial(sch, b.rv, lanes)

    n, f, y, x, *red = sch.get_loops(main)
    x_t = largest_divisor(extent(sch, x), _COLUMNS)
    fo, fi = sch.split(f, factors=[None, vec])
    xo, xi = sch.split(x, factors=[None, x_t])
    sch.reorder(n, fo, y, xo, *red, xi, fi)
    sch.parallel(sch.fuse(n, fo, y))
    for r in red:
        if (extent(sch, r) or 99) <= 7:
            sch.unroll(r)
    sch.unroll(xi)
    sch.vectorize(fi)
    init = sch.decompose_reduction(main, red[0])
    sch.vectorize(sch.get_loops(init)[-1])
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)


class DepthwiseConv2dInt8(GraphoptCPURule):
    """Integer depthwise conv2d, int32 accumulators vectorized over channels."""

    name = "depthwise-conv2d-int8"

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        lanes = vector_lanes(target)
        found = _int8_depthwise(sch, lanes)
        if found is None:
            return None
        main, blocks, vec = found
        schedule_int8_depthwise(sch, main, blocks, vec, lanes)
        return sch
