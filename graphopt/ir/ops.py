"""Canonical ops: the vocabulary of the IR, each defined once by a torch reference.

An `OpDef` names an op's positional inputs (trailing "?" = optional, leading "*" =
variadic), its attributes with defaults (`REQUIRED` = no default) and `impl`, a
torch function with the op's exact semantics. `to_torch()` calls `impl`; shape
inference runs it on meta tensors; frontends map onto these ops and emitters
map out of them. Layouts follow torch: NCHW activations, conv weight
[out, in/groups, *kernel], linear weight [out, in].

Padding attributes are ONNX-style: `pads` = (begin_0, .., begin_n, end_0, .., end_n)
over the spatial dims, so asymmetric padding is representable.

Quantization: `quantize(x, scale, zero_point)` -> integer (or float8) tensor and
`dequantize(q, scale, zero_point)` -> float; `axis` selects the per-channel axis
(None = per-tensor), `block_size` shares one scale among that many consecutive
elements along `axis` (ONNX's blocked layout), `qmin`/`qmax` narrow the range
(e.g. symmetric int8 [-127, 127]). A quantized weight is an int8/int4 parameter
feeding `dequantize`. int4/uint4 values are carried in int8/uint8 torch tensors;
`out_dtype` gives such ops their logical result dtype.

The op "opaque" is not in this table: it carries an op the frontends do not know,
in the form it came from (see `graph.Node`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from graphopt.ir.types import torch_dtype


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED: Any = _Required()
OPAQUE = "opaque"


@dataclass(frozen=True)
class OpDef:
    name: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    impl: Callable[..., Any]
    num_outputs: Callable[[Mapping[str, Any]], int] | int = 1
    doc: str = ""
    elementwise: bool = False
    out_dtype: Callable[[Mapping[str, Any]], str] | None = None  # logical dtype torch cannot carry (int4)

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[0].startswith("*")

    @property
    def min_inputs(self) -> int:
        if self.variadic:
            return 1
        return sum(1 for r in self.inputs if not r.endswith("?"))

    @property
    def max_inputs(self) -> int | None:
        return None if self.variadic else len(self.inputs)

    def input_role(self, index: int) -> str:
        if self.variadic:
            return self.inputs[0].lstrip("*")
        return self.inputs[index].rstrip("?")

    def output_count(self, attrs: Mapping[str, Any]) -> int:
        return self.num_outputs(attrs) if callable(self.num_outputs) else self.num_outputs

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """attrs completed with defaults; raises KeyError/ValueError naming what is wrong."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ValueError(
                f"unknown attribute(s) {sorted(unknown)} for op '{self.name}'; valid: {sorted(self.attrs)}"
            )
        full = dict(self.attrs)
        full.update(attrs)
        missing = [k for k, v in full.items() if v is REQUIRED]
        if missing:
            raise ValueError(f"op '{self.name}' needs attribute(s) {missing}")
        return full


OPS: dict[str, OpDef] = {}


def _define(name, inputs, impl, attrs=None, num_outputs=1, doc="", elementwise=False, out_dtype=None):
    OPS[name] = OpDef(name, tuple(inputs), dict(attrs or {}), impl, num_outputs, doc, elementwise, out_dtype)


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'; canonical ops: {', '.join(sorted(OPS))}") from None


# --- reference implementations -------------------------------------------------


def _split_pads(pads, nd):
    pads = tuple(pads)
    if len(pads) != 2 * nd:
        raise ValueError(f"pads {pads} must have {2 * nd} entries for {nd} spatial dims")
    return pads[:nd], pads[nd:]


def _torch_pad_order(begins, ends):
    # F.pad pads the last dim first: (last_begin, last_end, prev_begin, prev_end, ...)
    out = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [b, e]
    return out


def conv(x, weight, bias=None, *, stride, pads, dilation, groups):
    nd = x.dim() - 2
    begins, ends = _split_pads(pads, nd)
    if begins != ends:
        x = F.pad(x, _torch_pad_order(begins, ends))
        begins = (0,) * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, weight, bias, tuple(stride), tuple(begins), tuple(dilation), groups)


def linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


def batch_norm(x, weight, bias, running_mean, running_var, *, eps):
    return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)


def layer_norm(x, weight=None, bias=None, *, normalized_shape, eps):
    return F.layer_norm(x, tuple(normalized_shape), weight, bias, eps)


def gelu(x, *, approximate):
    return F.gelu(x, approximate=approximate)


def clip(x, *, min, max):  # noqa: A002 - ONNX/torch names
    return torch.clamp(x, min, max)


def _pool_pad(x, pads, nd, value):
    begins, ends = _split_pads(pads, nd)
    if begins == ends:
        return x, tuple(begins)
    return F.pad(x, _torch_pad_order(begins, ends), value=value), (0,) * nd


def max_pool(x, *, kernel_size, stride, pads, dilation, ceil_mode):
    nd = x.dim() - 2
    x, pad = _pool_pad(x, pads, nd, float("-inf"))
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return fn(x, tuple(kernel_size), tuple(stride), pad, tuple(dilation), ceil_mode)


def avg_pool(x, *, kernel_size, stride, pads, ceil_mode, count_include_pad):
    nd = x.dim() - 2
    begins, ends = _split_pads(pads, nd)
    if begins != ends:
        raise ValueError(f"avg_pool with asymmetric pads {tuple(pads)} is not supported")
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return fn(x, tuple(kernel_size), tuple(stride), tuple(begins), ceil_mode, count_include_pad)


def adaptive_avg_pool(x, *, output_size):
    fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[x.dim() - 2]
    return fn(x, tuple(output_size))


def adaptive_max_pool(x, *, output_size):
    fn = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[x.dim() - 2]
    return fn(x, tuple(output_size))


def mean(x, *, dims, keepdim):
    return torch.mean(x, dim=tuple(dims), keepdim=keepdim)


def reduce_sum(x, *, dims, keepdim):
    return torch.sum(x, dim=tuple(dims), keepdim=keepdim)


def softmax(x, *, axis):
    return torch.softmax(x, dim=axis)


def concat(*xs, axis):
    return torch.cat(xs, dim=axis)


def split(x, *, axis, sizes):
    return tuple(torch.split(x, list(sizes), dim=axis))


def reshape(x, *, shape):
    # ONNX semantics: 0 copies the input's dim at that index, -1 is inferred.
    target = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return torch.reshape(x, target)


def flatten(x, *, start_dim, end_dim):
    return torch.flatten(x, start_dim, end_dim)


def _axes(axes, rank: int, op: str) -> list[int]:
    """`axes` as sorted non-negative indices into a tensor of `rank` dims; raises if out of range or repeated."""
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"{op} axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"{op} axes {list(axes)} name an axis twice")
    return sorted(out)


def squeeze(x, *, axes):
    # ONNX semantics: each axis must have size 1 (torch would skip it silently); [] squeezes nothing.
    dims = _axes(axes, x.dim(), "squeeze")
    sizes = [x.shape[d] for d in dims]
    if any(s != 1 for s in sizes):
        raise ValueError(f"squeeze axes {dims} have sizes {sizes}; each must be 1")
    return torch.squeeze(x, tuple(dims)) if dims else x


def unsqueeze(x, *, axes):
    # ONNX semantics: axes index the result, so new dims land exactly there.
    for d in _axes(axes, x.dim() + len(axes), "unsqueeze"):
        x = x.unsqueeze(d)
    return x


def permute(x, *, perm):
    return x.permute(*perm)


def expand(x, *, shape):
    return x.expand(*shape)


def slice_(x, *, axis, start, end, step):
    return x[(slice(None),) * (axis % x.dim()) + (slice(start, end, step),)]


def select(x, *, axis, index):
    return torch.select(x, axis, index)


def embedding(indices, weight):
    return F.embedding(indices, weight)


def cast(x, *, dtype):
    return x.to(torch_dtype(dtype))


def identity(x):
    return x


def dropout(x, *, p):
    return x  # inference semantics; eliminate-identity removes it


def _broadcast_param(t, x, axis, block_size):
    """scale / zero point shaped to broadcast against x: per-tensor, per-channel or blocked."""
    if axis is None or t.dim() == 0:
        return t
    axis = axis % x.dim()
    if block_size:  # ONNX blocked layout: t has x's rank, ceil(dim / block) along axis
        return t.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


# Representable range of each quantized dtype (float8: the largest finite magnitude).
QUANT_RANGE = {
    "int4": (-8, 7),
    "uint4": (0, 15),
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "float8_e4m3fn": (-448.0, 448.0),
    "float8_e5m2": (-57344.0, 57344.0),
}


def quant_range(dtype: str, qmin=None, qmax=None) -> tuple:
    """[qmin, qmax] of a quantize op: the dtype's range unless narrowed (e.g. [-127, 127])."""
    try:
        lo, hi = QUANT_RANGE[dtype]
    except KeyError:
        raise ValueError(f"cannot quantize to '{dtype}'; quantized dtypes: {', '.join(QUANT_RANGE)}") from None
    lo = lo if qmin is None else qmin
    hi = hi if qmax is None else qmax
    if not QUANT_RANGE[dtype][0] <= lo <= hi <= QUANT_RANGE[dtype][1]:
        raise ValueError(f"[qmin, qmax] = [{lo}, {hi}] is empty or outside the range of {dtype}")
    return lo, hi


def quantize(x, scale, zero_point, *, axis, dtype, qmin, qmax, block_size):
    lo, hi = quant_range(dtype, qmin, qmax)
    s = _broadcast_param(scale, x, axis, block_size)
    z = _broadcast_param(zero_point, x, axis, block_size)
    if dtype.startswith("float8"):  # saturating cast; the zero point is 0 by definition
        return torch.clamp(x / s, lo, hi).to(torch_dtype(dtype))
    q = torch.clamp(torch.round(x / s) + z.to(x.dtype), lo, hi)
    return q.to(torch_dtype(dtype))


def dequantize(q, scale, zero_point, *, axis, block_size):
    s = _broadcast_param(scale, q, axis, block_size)
    z = _broadcast_param(zero_point, q, axis, block_size)
    return (q.to(s.dtype) - z.to(s.dtype)) * s


def conv_transpose(x, weight, bias=None, *, stride, pads, output_padding, dilation, groups):
    # The full transposed conv, then `pads` cropped (begins, ends) and `output_padding` zeros added at
    # each spatial end: ONNX's output size stride*(in-1) + output_padding + dilation*(k-1) + 1 - begin - end.
    nd = x.dim() - 2
    begins, ends = _split_pads(pads, nd)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    extra = tuple(output_padding)
    if begins == ends and all(p < max(s, d) for p, s, d in zip(extra, stride, dilation)):  # torch's own form
        return fn(x, weight, bias, tuple(stride), tuple(begins), extra, groups, tuple(dilation))
    y = fn(x, weight, None, tuple(stride), 0, 0, groups, tuple(dilation))
    y = F.pad(y, _torch_pad_order([-b for b in begins], [p - e for p, e in zip(extra, ends)]))  # < 0 crops
    return y if bias is None else y + bias.reshape([1, -1] + [1] * nd)


_aten = torch.ops.aten
_RESIZE_KERNELS = {
    ("nearest", 1): _aten.upsample_nearest1d.default,
    ("nearest", 2): _aten.upsample_nearest2d.default,
    ("nearest", 3): _aten.upsample_nearest3d.default,
    ("nearest-exact", 1): _aten._upsample_nearest_exact1d.default,
    ("nearest-exact", 2): _aten._upsample_nearest_exact2d.default,
    ("nearest-exact", 3): _aten._upsample_nearest_exact3d.default,
    ("linear", 1): _aten.upsample_linear1d.default,
    ("linear", 2): _aten.upsample_bilinear2d.default,
    ("linear", 3): _aten.upsample_trilinear3d.default,
    ("cubic", 2): _aten.upsample_bicubic2d.default,
}
RESIZE_MODES = ("nearest", "nearest-exact", "linear", "cubic")


def resize(x, *, size, mode, align_corners, scales):
    # torch's interpolate kernels: `scales` (per spatial axis, None = out/in) place the source
    # coordinates exactly as F.interpolate(scale_factor=...) does; align_corners ignores them.
    nd = x.dim() - 2
    kernel = _RESIZE_KERNELS.get((mode, nd))
    if kernel is None:
        raise ValueError(f"resize mode '{mode}' of {nd}-d inputs is not supported; modes: {RESIZE_MODES}")
    if len(size) != nd or (scales is not None and len(scales) != nd):
        raise ValueError(f"resize of a {nd}-d input needs {nd} sizes and scales, got {list(size)}, {scales}")
    if mode.startswith("nearest") and align_corners:
        raise ValueError(f"resize mode '{mode}' has no align_corners form")
    scales = [None] * nd if scales is None else [None if s is None else float(s) for s in scales]
    size = [int(s) for s in size]
    if mode.startswith("nearest"):
        return kernel(x, size, *scales)
    return kernel(x, size, bool(align_corners), *scales)


def pixel_shuffle(x, *, upscale_factor):
    return F.pixel_shuffle(x, upscale_factor)


def pixel_unshuffle(x, *, downscale_factor):
    return F.pixel_unshuffle(x, downscale_factor)


def einsum(*xs, equation):
    return torch.einsum(equation, *xs)


# --- the table ------------------------------------------------------------------

_CONV_ATTRS = dict(stride=REQUIRED, pads=REQUIRED, dilation=REQUIRED, groups=1)
_define(
    "conv",
    ["x", "weight", "bias?"],
    conv,
    _CONV_ATTRS,
    doc="N-d convolution; weight [out, in/groups, *kernel]; pads ONNX-style.",
)
_define(
    "conv_transpose",
    ["x", "weight", "bias?"],
    conv_transpose,
    dict(_CONV_ATTRS, output_padding=REQUIRED),
    doc="N-d transposed convolution; weight [in, out/groups, *kernel]; pads ONNX-style (cropped from the "
    "full output), output_padding added at the spatial ends.",
)
_define("linear", ["x", "weight", "bias?"], linear, doc="y = x @ weight.T + bias; weight [out, in].")
_define("matmul", ["a", "b"], torch.matmul, doc="Batched matrix product with broadcasting.")
_define(
    "batch_norm",
    ["x", "weight", "bias", "running_mean", "running_var"],
    batch_norm,
    dict(eps=1e-5),
    doc="Inference batch norm over axis 1.",
)
_define(
    "layer_norm",
    ["x", "weight?", "bias?"],
    layer_norm,
    dict(normalized_shape=REQUIRED, eps=1e-5),
    doc="Layer norm over the trailing dims.",
)

for _name, _fn in [
    ("relu", torch.relu),
    ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh),
    ("silu", F.silu),
    ("hardswish", F.hardswish),
    ("hardsigmoid", F.hardsigmoid),
    ("neg", torch.neg),
    ("exp", torch.exp),
    ("log", torch.log),
    ("sqrt", torch.sqrt),
    ("rsqrt", torch.rsqrt),
    ("erf", torch.erf),
    ("abs", torch.abs),
    ("reciprocal", torch.reciprocal),
]:
    _define(_name, ["x"], _fn, elementwise=True, doc=f"Elementwise {_name}.")
_define("gelu", ["x"], gelu, dict(approximate="none"), elementwise=True, doc="GELU (exact or tanh).")
_define(
    "clip",
    ["x"],
    clip,
    dict(min=None, max=None),
    elementwise=True,
    doc="Clamp to [min, max]; relu6 is clip{min=0, max=6}.",
)

for _name, _fn in [
    ("add", torch.add),
    ("sub", torch.sub),
    ("mul", torch.mul),
    ("div", torch.div),
    ("pow", torch.pow),
    ("maximum", torch.maximum),
    ("minimum", torch.minimum),
]:
    _define(_name, ["a", "b"], _fn, elementwise=True, doc=f"Broadcasting elementwise {_name}.")

for _name, _fn in [
    ("equal", torch.eq),
    ("less", torch.lt),
    ("greater", torch.gt),
    ("less_equal", torch.le),
    ("greater_equal", torch.ge),
]:
    _define(_name, ["a", "b"], _fn, elementwise=True, doc=f"Broadcasting comparison ({_name}) -> bool.")
_define(
    "where", ["condition", "a", "b"], torch.where, elementwise=True, doc="a where condition, else b (broadcasting)."
)

_POOL_ATTRS = dict(kernel_size=REQUIRED, stride=REQUIRED, pads=REQUIRED, ceil_mode=False)
_define("max_pool", ["x"], max_pool, dict(_POOL_ATTRS, dilation=REQUIRED), doc="Max pooling.")
_define("avg_pool", ["x"], avg_pool, dict(_POOL_ATTRS, count_include_pad=True), doc="Average pooling.")
_define(
    "adaptive_avg_pool",
    ["x"],
    adaptive_avg_pool,
    dict(output_size=REQUIRED),
    doc="Adaptive average pooling (global pooling is output_size=(1, 1)).",
)
_define("adaptive_max_pool", ["x"], adaptive_max_pool, dict(output_size=REQUIRED), doc="Adaptive max pooling.")
_define("mean", ["x"], mean, dict(dims=REQUIRED, keepdim=False), doc="Mean over dims.")
_define("sum", ["x"], reduce_sum, dict(dims=REQUIRED, keepdim=False), doc="Sum over dims.")
_define("softmax", ["x"], softmax, dict(axis=REQUIRED), doc="Softmax along axis.")

_define("concat", ["*xs"], concat, dict(axis=REQUIRED), doc="Concatenate along axis.")
_define(
    "split",
    ["x"],
    split,
    dict(axis=REQUIRED, sizes=REQUIRED),
    num_outputs=lambda a: len(a["sizes"]),
    doc="Split into pieces of the given sizes.",
)
_define("reshape", ["x"], reshape, dict(shape=REQUIRED), doc="Reshape; 0 copies a dim, -1 infers.")
_define("flatten", ["x"], flatten, dict(start_dim=1, end_dim=-1), doc="Flatten dims start..end.")
_define("squeeze", ["x"], squeeze, dict(axes=REQUIRED), doc="Drop the listed size-1 axes.")
_define(
    "unsqueeze", ["x"], unsqueeze, dict(axes=REQUIRED), doc="Insert size-1 axes at the listed positions of the result."
)
_define("permute", ["x"], permute, dict(perm=REQUIRED), doc="Permute dims (transpose).")
_define("expand", ["x"], expand, dict(shape=REQUIRED), doc="Broadcast to shape (-1 keeps a dim).")
_define(
    "slice",
    ["x"],
    slice_,
    dict(axis=REQUIRED, start=REQUIRED, end=REQUIRED, step=1),
    doc="Strided slice along one axis.",
)
_define("select", ["x"], select, dict(axis=REQUIRED, index=REQUIRED), doc="Take one index along axis, dropping it.")
_define(
    "embedding",
    ["indices", "weight"],
    embedding,
    doc="Row lookup in weight [num, dim]; an index outside "
    "[0, num) raises here (torch) but the TVM backend clamps it: -1 reads row 0, num or more the last row.",
)
_define(
    "resize",
    ["x"],
    resize,
    dict(size=REQUIRED, mode="nearest", align_corners=False, scales=None),
    doc="Resize the spatial dims to `size` as torch's interpolate: mode nearest (floor of dst * in/out), "
    "nearest-exact (half-pixel, rounding up), linear or cubic (half-pixel, or align_corners); `scales` "
    "(per axis, None = out/in) place source coordinates as scale_factor does.",
)
_define(
    "pixel_shuffle",
    ["x"],
    pixel_shuffle,
    dict(upscale_factor=REQUIRED),
    doc="[N, C*r*r, H, W] -> [N, C, H*r, W*r] (ONNX DepthToSpace, CRD).",
)
_define(
    "pixel_unshuffle",
    ["x"],
    pixel_unshuffle,
    dict(downscale_factor=REQUIRED),
    doc="[N, C, H*r, W*r] -> [N, C*r*r, H, W], the inverse of pixel_shuffle.",
)
_define("einsum", ["*xs"], einsum, dict(equation=REQUIRED), doc="Einstein summation (torch/ONNX equation).")
_define("cast", ["x"], cast, dict(dtype=REQUIRED), doc="Convert dtype.")
_define("identity", ["x"], identity, doc="Returns its input.")
_define("dropout", ["x"], dropout, dict(p=0.5), doc="Dropout; identity at inference.")
_define(
    "quantize",
    ["x", "scale", "zero_point"],
    quantize,
    dict(axis=None, dtype="int8", qmin=None, qmax=None, block_size=None),
    out_dtype=lambda a: a["dtype"],
    doc="clamp(round(x / scale) + zero_point, qmin, qmax) as dtype (int4/uint4/int8/uint8/"
    "int16/int32, or a saturating float8 cast); axis = per-channel axis (None = "
    "per-tensor); block_size = blocks of that many along axis share a scale.",
)
_define(
    "dequantize",
    ["q", "scale", "zero_point"],
    dequantize,
    dict(axis=None, block_size=None),
    doc="(q - zero_point) * scale; axis and block_size as for quantize.",
)


@dataclass(frozen=True)
class ValueRef:
    """Placeholder for the i-th input value inside an opaque node's argument template."""

    index: int
