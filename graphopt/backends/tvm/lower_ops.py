"""Lowering rules: one function per canonical op, from graphopt semantics to Relax.

A rule has the signature of the op's torch reference in `graphopt.ir.ops`:
`rule(cx, *inputs, **attrs)`, where the inputs are Relax expressions (None for
an absent optional input) and `cx` is the `RuleContext` of the node being
lowered. It returns one Relax expression, or a tuple of them for a
multi-output op. Shapes are static, so everything shape-dependent (reshape's
0/-1, expand's -1, slice bounds, flatten) is resolved here, at lowering time.

Each rule states where TVM's op differs from ours and how the rule bridges it;
tests/test_tvm_lower.py checks every rule against the torch reference.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import tvm
from tvm import relax, tirx

from graphopt.ir.ops import quant_range
from graphopt.ir.ops import resize as resize_reference
from graphopt.ir.types import TensorType, carrier_dtype, dtype_from_torch, torch_dtype

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

R = relax.op


@dataclass
class RuleContext:
    """What a rule may look at besides its inputs: the node, the graph and the builder."""

    bb: relax.BlockBuilder
    graph: "Graph"
    node: "Node"

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def out_type(self, index: int = 0) -> TensorType | None:
        """The graph's declared type of output `index` (None when unknown)."""
        return self.graph.value(self.node.outputs[index]).type

    def out_dtype(self, default: str) -> str:
        t = self.out_type()
        return t.dtype if t is not None else default


def shape_of(e: relax.Expr) -> list:
    """Static dims as ints; a symbolic dim (the batch "N" of a dynamic-batch build) as its tir expression."""
    return [int(d) if isinstance(d, tirx.IntImm) else d for d in e.ty.shape.values]


def _product(dims) -> Any:
    """The product of dims, an int while they are static, else a tir expression."""
    return functools.reduce(operator.mul, dims, 1)


def dtype_of(e: relax.Expr) -> str:
    return str(e.ty.dtype)


def const(value, dt: str) -> relax.Constant:
    # dtype always explicit: relax.const alone turns int64 into int32 and float64 into float32.
    return relax.const(np.asarray(value, dtype=dt), dt)


def cast(e: relax.Expr, dt: str) -> relax.Expr:
    return e if dtype_of(e) == dt else R.astype(e, dt)


def _channel_shape(rank: int, axis: int, size: int) -> list[int]:
    s = [1] * rank
    s[axis] = size
    return s


# --- linear algebra and normalization ----------------------------------------------


def conv(cx, x, w, b=None, *, stride, pads, dilation, groups):
    # ONNX pads (begins..., ends...) are exactly Relax's padding order for 1/2/3-d.
    nd = len(shape_of(x)) - 2
    fn = {1: R.nn.conv1d, 2: R.nn.conv2d, 3: R.nn.conv3d}[nd]
    y = fn(x, w, strides=list(stride), padding=list(pads), dilation=list(dilation), groups=groups)
    if b is None:
        return y
    return R.add(cx.emit(y), R.reshape(b, _channel_shape(nd + 2, 1, shape_of(b)[0])))


def conv_transpose(cx, x, w, b=None, *, stride, pads, output_padding, dilation, groups):
    # Relax takes ONNX's pads order and the IOHW weight. Output padding is folded into the end
    # crop where that crop is large enough; otherwise it is Relax's output_padding (< stride).
    nd = len(shape_of(x)) - 2
    fn = {1: R.nn.conv1d_transpose, 2: R.nn.conv2d_transpose, 3: R.nn.conv3d_transpose}[nd]
    begins, ends, extra = list(pads[:nd]), list(pads[nd:]), list(output_padding)
    folded = [(e - p, 0) if e >= p else (e, p) for e, p in zip(ends, extra)]
    y = fn(
        x,
        w,
        strides=list(stride),
        padding=begins + [e for e, _ in folded],
        output_padding=[p for _, p in folded],
        dilation=list(dilation),
        groups=groups,
    )
    if b is None:
        return y
    return R.add(cx.emit(y), R.reshape(b, _channel_shape(nd + 2, 1, shape_of(b)[0])))


def linear(cx, x, w, b=None):
    return R.linear(x, w, b)


def matmul(cx, a, b):
    return R.matmul(a, b)


def batch_norm(cx, x, w, b, mean, var, *, eps):
    # Inference form: running statistics, no update; Relax returns (y, mean, var).
    y = cx.emit(R.nn.batch_norm(x, w, b, mean, var, axis=1, epsilon=eps, training=False))
    return relax.TupleGetItem(y, 0)


def layer_norm(cx, x, w=None, b=None, *, normalized_shape, eps):
    # Relax needs gamma and beta; absent ones are ones/zeros.
    ns = [int(d) for d in normalized_shape]
    w = const(np.ones(ns), dtype_of(x)) if w is None else w
    b = const(np.zeros(ns), dtype_of(x)) if b is None else b
    return R.nn.layer_norm(x, w, b, axes=list(range(-len(ns), 0)), epsilon=eps)


# --- elementwise -----------------------------------------------------------------------


def _unary(fn: Callable) -> Callable:
    return lambda cx, x: fn(x)


def hardsigmoid(cx, x):
    # relu6(x + 3) / 6
    return R.divide(R.clip(R.add(x, const(3, dtype_of(x))), 0, 6), const(6, dtype_of(x)))


def hardswish(cx, x):
    # x * relu6(x + 3) / 6
    return R.multiply(x, cx.emit(hardsigmoid(cx, x)))


def reciprocal(cx, x):
    return R.divide(const(1, dtype_of(x)), x)


def gelu(cx, x, *, approximate):
    return {"none": R.nn.gelu, "tanh": R.nn.gelu_tanh}[approximate](x)


def clip(cx, x, *, min, max):  # noqa: A002 - op attribute names
    # An absent bound is +-inf for floats and the dtype's range for integers.
    dt = dtype_of(x)
    if np.issubdtype(np.dtype(dt), np.floating):
        lo, hi = -math.inf, math.inf
    else:
        lo, hi = np.iinfo(np.dtype(dt)).min, np.iinfo(np.dtype(dt)).max
    return R.clip(x, lo if min is None else min, hi if max is None else max)


def _not_immediate(e: relax.Expr, dt: str) -> relax.Expr:
    """`e` cast to `dt`; a 0-d float constant becomes a [1] tensor.

    TVM's LegalizeOps turns a 0-d constant operand of a binary op into a TIR immediate, and
    TIR's constant folder then rewrites x * 0 => 0 (wrong for inf, NaN, -x), x + 0.0 => x and
    x - (-0.0) => x (wrong for -0.0), and refuses to build x / 0. A [1] tensor stays a buffer
    read, so IEEE semantics hold; integer immediates fold exactly and stay.
    """
    if (
        isinstance(e, tvm.ir.Constant)
        and isinstance(e.value, tvm.runtime.Tensor)
        and not shape_of(e)
        and np.issubdtype(np.dtype(dt), np.floating)
    ):
        return const(e.value.numpy().astype(dt).reshape(1), dt)
    return cast(e, dt)


def _binary(fn: Callable) -> Callable:
    # torch promotes mixed dtypes; Relax wants them equal: cast both to the result dtype.
    def rule(cx, a, b):
        dt = cx.out_dtype(dtype_of(a))
        y = fn(_not_immediate(a, dt), _not_immediate(b, dt))
        if not shape_of(a) and not shape_of(b):  # both 0-d: undo the [1] the workaround gave
            y = R.reshape(cx.emit(y), [])
        return y

    return rule


def _promoted(a: relax.Expr, b: relax.Expr) -> str:
    """torch's result dtype for two operands (a 0-d operand does not widen a dimensioned one)."""
    a, b = (torch.empty([1] * min(len(shape_of(x)), 1), dtype=torch_dtype(dtype_of(x))) for x in (a, b))
    return dtype_from_torch(torch.result_type(a, b))


def _compare(fn: Callable) -> Callable:
    # Relax compares equal dtypes: both operands are cast to the dtype torch compares in.
    def rule(cx, a, b):
        dt = _promoted(a, b)
        return fn(_not_immediate(a, dt), _not_immediate(b, dt))

    return rule


def where(cx, condition, a, b):
    dt = cx.out_dtype(_promoted(a, b))
    y = R.where(cast(condition, "bool"), _not_immediate(a, dt), _not_immediate(b, dt))
    if not shape_of(condition) and not shape_of(a) and not shape_of(b):  # all 0-d: undo the [1]
        y = R.reshape(cx.emit(y), [])
    return y


def einsum(cx, *xs, equation):
    # A permutation of one operand is permute_dims; a product of two operands over distinct letters
    # is a batched matmul between permutes and reshapes (fast schedules); anything else (traces,
    # diagonals, ellipses, sums within one operand, three operands) is R.einsum.
    perm = _einsum_as_permute(equation)
    if perm is not None and len(xs) == 1:
        return R.permute_dims(xs[0], perm)
    plan = _einsum_as_matmul(equation, [shape_of(x) for x in xs])
    if plan is None:
        return R.einsum(list(xs), equation)
    a, b = xs
    (perm_a, shape_a), (perm_b, shape_b), shape_y, perm_y = plan
    a = cx.emit(R.reshape(cx.emit(R.permute_dims(a, perm_a)), shape_a))
    b = cx.emit(R.reshape(cx.emit(R.permute_dims(b, perm_b)), shape_b))
    y = cx.emit(R.reshape(cx.emit(R.matmul(a, b)), shape_y))
    return R.permute_dims(y, perm_y) if perm_y != sorted(perm_y) else y


def _einsum_as_permute(equation: str) -> list[int] | None:
    """The permutation a one-operand equation such as "bij->bji" is, or None."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "," in eq or "." in eq:
        return None
    src, out = eq.split("->")
    if len(set(src)) != len(src) or sorted(src) != sorted(out):
        return None
    return [src.index(c) for c in out]


def _einsum_as_matmul(equation: str, shapes: list[list[int]]):
    """(a: perm, [B, M, K]), (b: perm, [B, K, N]), [*batch, *m, *n], perm to the output; or None."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "." in eq or len(shapes) != 2:
        return None
    lhs, out = eq.split("->")
    ta, tb = lhs.split(",")
    if any(len(set(t)) != len(t) for t in (ta, tb, out)):
        return None
    size = {c: d for t, s in ((ta, shapes[0]), (tb, shapes[1])) for c, d in zip(t, s)}
    if any(size[c] != d for t, s in ((ta, shapes[0]), (tb, shapes[1])) for c, d in zip(t, s)):
        return None  # a broadcast letter (size 1 against n)
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    m = [c for c in ta if c not in tb]
    n = [c for c in tb if c not in ta]
    if any(c not in out for c in m + n):
        return None  # a letter summed within one operand
    prod = lambda cs: int(np.prod([size[c] for c in cs], dtype=np.int64))  # noqa: E731
    nb, nm, nk, nn = prod(batch), prod(m), prod(contract), prod(n)
    perm_a = [ta.index(c) for c in batch + m + contract]
    perm_b = [tb.index(c) for c in batch + contract + n]
    order = batch + m + n
    return (
        (perm_a, [nb, nm, nk]),
        (perm_b, [nb, nk, nn]),
        [size[c] for c in order],
        [order.index(c) for c in out],
    )


# --- pooling and reductions ----------------------------------------------------------------


def max_pool(cx, x, *, kernel_size, stride, pads, dilation, ceil_mode):
    nd = len(shape_of(x)) - 2
    fn = {1: R.nn.max_pool1d, 2: R.nn.max_pool2d, 3: R.nn.max_pool3d}[nd]
    return fn(
        x,
        pool_size=list(kernel_size),
        strides=list(stride),
        padding=list(pads),
        dilation=list(dilation),
        ceil_mode=ceil_mode,
    )


def avg_pool(cx, x, *, kernel_size, stride, pads, ceil_mode, count_include_pad):
    nd = len(shape_of(x)) - 2
    fn = {1: R.nn.avg_pool1d, 2: R.nn.avg_pool2d, 3: R.nn.avg_pool3d}[nd]
    return fn(
        x,
        pool_size=list(kernel_size),
        strides=list(stride),
        padding=list(pads),
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )


# Adaptive pools use torch's windows [floor(i*n/m), ceil((i+1)*n/m)). Relax's (TOPI's)
# kernel for them has data-dependent window extents that dlight cannot schedule for
# GPUs, so with static shapes they become ordinary ops: a reduction (global), a
# regular pool (n divisible by m) or, for uneven windows, one step per spatial axis.


def _windows(n: int, m: int) -> list[tuple[int, int]]:
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]


def _adaptive_plan(x, output_size) -> tuple[list[int], list[int]]:
    s = shape_of(x)
    return s[2:], [int(o) if o is not None else s[2 + i] for i, o in enumerate(output_size)]


def adaptive_avg_pool(cx, x, *, output_size):
    ins, outs = _adaptive_plan(x, output_size)
    axes = list(range(2, 2 + len(ins)))
    if all(o == 1 for o in outs):
        return R.mean(x, axes, keepdims=True)
    if all(n % o == 0 for n, o in zip(ins, outs)):
        k = [n // o for n, o in zip(ins, outs)]
        return avg_pool(cx, x, kernel_size=k, stride=k, pads=[0] * 2 * len(k), ceil_mode=False, count_include_pad=True)
    # uneven: average along each axis with a constant [out, in] matrix (a matmul)
    y = x
    for axis, n, o in zip(axes, ins, outs):
        if n != o:
            a = np.zeros((o, n), dtype=dtype_of(x))
            for i, (lo, hi) in enumerate(_windows(n, o)):
                a[i, lo:hi] = 1.0 / (hi - lo)
            y = cx.emit(_matmul_along(cx, y, axis, const(a.T, dtype_of(x))))
    return y


def adaptive_max_pool(cx, x, *, output_size):
    ins, outs = _adaptive_plan(x, output_size)
    axes = list(range(2, 2 + len(ins)))
    if all(o == 1 for o in outs):
        return R.max(x, axes, keepdims=True)
    if all(n % o == 0 for n, o in zip(ins, outs)):
        k = [n // o for n, o in zip(ins, outs)]
        return max_pool(cx, x, kernel_size=k, stride=k, pads=[0] * 2 * len(k), dilation=[1] * len(k), ceil_mode=False)
    # uneven: max over each window along one axis at a time (max is separable)
    y = x
    for axis, n, o in zip(axes, ins, outs):
        if n != o:
            parts = [
                cx.emit(R.max(R.strided_slice(y, [axis], [lo], [hi]), [axis], keepdims=True))
                for lo, hi in _windows(n, o)
            ]
            y = cx.emit(R.concat(parts, axis))
    return y


def _matmul_along(cx, x, axis: int, m: relax.Expr) -> relax.Expr:
    """`x` with its `axis` multiplied by matrix `m` [in, out] (moved last and back)."""
    rank = len(shape_of(x))
    if axis == rank - 1:
        return R.matmul(x, m)
    perm = [d for d in range(rank) if d != axis] + [axis]
    inverse = [perm.index(d) for d in range(rank)]
    return R.permute_dims(cx.emit(R.matmul(cx.emit(R.permute_dims(x, perm)), m)), inverse)


def mean(cx, x, *, dims, keepdim):
    return R.mean(x, list(dims), keepdim)


def reduce_sum(cx, x, *, dims, keepdim):
    # torch sums integers in int64; Relax keeps the input dtype.
    return R.sum(cast(x, cx.out_dtype(dtype_of(x))), list(dims), keepdim)


def softmax(cx, x, *, axis):
    return R.nn.softmax(x, axis)


# --- shape and data movement ---------------------------------------------------------------


def concat(cx, *xs, axis):
    dt = cx.out_dtype(dtype_of(xs[0]))
    return R.concat([cast(x, dt) for x in xs], axis)


def split(cx, x, *, axis, sizes):
    # Relax splits at indices: the running sums of the sizes.
    parts = cx.emit(R.split(x, [int(i) for i in np.cumsum(sizes)[:-1]], axis))
    return tuple(relax.TupleGetItem(parts, i) for i in range(len(sizes)))


def reshape(cx, x, *, shape: Any):
    # ONNX semantics resolved statically: 0 copies the input dim, -1 is inferred by Relax.
    src = shape_of(x)
    return R.reshape(x, [src[i] if d == 0 else int(d) for i, d in enumerate(shape)])


def flatten(cx, x, *, start_dim, end_dim):
    s = shape_of(x)
    if not s:
        return R.reshape(x, [1])
    lo, hi = start_dim % len(s), end_dim % len(s)
    return R.reshape(x, s[:lo] + [_product(s[lo : hi + 1])] + s[hi + 1 :])


def squeeze(cx, x, *, axes):
    # no axes squeezes nothing (Relax would squeeze every size-1 dim).
    rank = len(shape_of(x))
    return R.squeeze(x, [a % rank for a in axes]) if axes else x


def unsqueeze(cx, x, *, axes):
    # expand_dims, like ours, counts axes in the result.
    rank = len(shape_of(x)) + len(axes)
    return R.expand_dims(x, [a % rank for a in axes]) if axes else x


def permute(cx, x, *, perm):
    return R.permute_dims(x, list(perm))


def expand(cx, x, *, shape: Any):
    # -1 keeps the input's dim (aligned from the right); new leading dims are prepended.
    src = shape_of(x)
    lead = len(shape) - len(src)
    target = [src[i - lead] if d == -1 else int(d) for i, d in enumerate(shape)]
    return R.broadcast_to(x, target)


def slice_(cx, x, *, axis, start, end, step):
    # Python slice bounds (None, negative, past the end) clamped statically.
    dim = shape_of(x)[axis]
    s, e, st = slice(start, end, step).indices(dim)
    e = max(e, s)
    return R.strided_slice(x, [axis], [s], [e], [st])


def select(cx, x, *, axis, index):
    # slice one index, then drop the axis.
    s = shape_of(x)
    axis, index = axis % len(s), index % s[axis % len(s)]
    return R.squeeze(cx.emit(R.strided_slice(x, [axis], [index], [index + 1])), [axis])


_RESIZE_METHOD = {  # mode -> (Relax method, rounding, coordinate mode without align_corners)
    "nearest": ("nearest_neighbor", "floor", "asymmetric"),
    "nearest-exact": ("nearest_neighbor", "round_prefer_ceil", "half_pixel"),
    "linear": ("linear", "", "half_pixel"),
    "cubic": ("cubic", "", "half_pixel"),
}


def resize(cx, x, *, size, mode, align_corners, scales):
    # Relax's resize places source coordinates by in/out. torch uses 1/scale when a scale factor
    # is given (x1.5 of 5 -> 7 reads at 5/7.5, not 5/7); where they differ in float32, each axis
    # is resized by a constant [in, out] interpolation matrix built from the torch reference.
    shape, dt = shape_of(x), dtype_of(x)
    ins, nd = shape[2:], len(shape) - 2
    scales = [None] * nd if scales is None else list(scales)
    exact = align_corners or all(
        s is None or np.float32(1 / s) == np.float32(n / int(m)) for s, n, m in zip(scales, ins, size)
    )
    if not exact or nd == 1:
        y = x
        for axis, (n, m, s) in enumerate(zip(ins, size, scales)):
            if n != m or s is not None:
                a = _resize_matrix(mode, align_corners, n, int(m), s)
                y = cx.emit(_matmul_along(cx, y, 2 + axis, const(a, dt)))
        return y
    method, rounding, coords = _RESIZE_METHOD[mode]
    fn = R.image.resize2d if nd == 2 else R.image.resize3d
    return fn(
        x,
        [int(m) for m in size],
        method=method,
        coordinate_transformation_mode="align_corners" if align_corners else coords,
        rounding_method=rounding,
        cubic_alpha=-0.75,
    )


def _resize_matrix(mode, align_corners, n: int, m: int, scale) -> np.ndarray:
    """[n, m]: column j weights the inputs of output j along one axis (the reference on a basis)."""
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    out = resize_reference(basis, size=[1, m], mode=mode, align_corners=align_corners, scales=[1.0, scale])
    return out.reshape(n, m).numpy()


def pixel_shuffle(cx, x, *, upscale_factor):
    # [N, C*r*r, H, W] -> [N, C, r, r, H, W] -> [N, C, H, r, W, r] -> [N, C, H*r, W*r]
    n, c, h, w = shape_of(x)
    r = int(upscale_factor)
    y = cx.emit(R.reshape(x, [n, c // (r * r), r, r, h, w]))
    y = cx.emit(R.permute_dims(y, [0, 1, 4, 2, 5, 3]))
    return R.reshape(y, [n, c // (r * r), h * r, w * r])


def pixel_unshuffle(cx, x, *, downscale_factor):
    # [N, C, H*r, W*r] -> [N, C, H, r, W, r] -> [N, C, r, r, H, W] -> [N, C*r*r, H, W]
    n, c, h, w = shape_of(x)
    r = int(downscale_factor)
    y = cx.emit(R.reshape(x, [n, c, h // r, r, w // r, r]))
    y = cx.emit(R.permute_dims(y, [0, 1, 3, 5, 2, 4]))
    return R.reshape(y, [n, c * r * r, h // r, w // r])


def embedding(cx, indices, weight):
    # "clip" mode: an index outside [0, num) is clamped into it (-1 reads row 0, num or more
    # the last row) where torch raises; documented in ir/ops.py, pinned by a test.
    return R.take(weight, indices, axis=0, mode="clip")


def cast_(cx, x, *, dtype: str):
    # float -> bool is "nonzero" in torch, a truncation in TIR: compare instead.
    if dtype == "bool" and dtype_of(x) != "bool":
        return R.not_equal(x, const(0, dtype_of(x)))
    return R.astype(x, dtype)


def identity(cx, x, **_):
    return x


def _qparam_axis(x, scale, axis) -> int | None:
    """Relax's channel axis for our `axis`; None when a per-tensor scale has several
    elements (it broadcasts like any operand, which Relax's ops cannot express)."""
    if axis is not None:
        return axis % len(shape_of(x))
    n = int(np.prod(shape_of(scale), dtype=np.int64))
    if n == 1:
        return -1
    return None


def quantize(cx, x, scale, zero_point, *, axis, dtype: str, qmin, qmax, block_size):
    # Relax: clip(round(x / s) + z); its round is round-half-to-even (nearbyint/rint) on
    # CPU and CUDA, like torch.round. int4/uint4 are computed in int8/uint8 (their carrier).
    if dtype.startswith("float8"):
        raise ValueError(f"quantize to {dtype} is not lowered to TVM yet")
    lo, hi = quant_range(dtype, qmin, qmax)
    out = carrier_dtype(dtype)
    ax = None if block_size else _qparam_axis(x, scale, axis)
    if ax is None or (lo, hi) != _int_range(out):  # blocked, broadcasting or narrowed: spell it out
        s, z = (_broadcast_qparam(cx, p, x, axis, block_size) for p in (scale, zero_point))
        q = R.add(R.round(R.divide(x, s)), cast(z, dtype_of(x)))
        return R.astype(R.clip(cx.emit(q), lo, hi), out)
    return R.quantize(x, _vector(scale), _vector(zero_point), axis=ax, out_dtype=out)


def dequantize(cx, q, scale, zero_point, *, axis, block_size):
    # Relax: (q - z) * s, computed in int32 then float32 (exact for 8-bit q).
    out = cx.out_dtype(dtype_of(scale))
    ax = None if block_size else _qparam_axis(q, scale, axis)
    if ax is None:
        s, z = (_broadcast_qparam(cx, p, q, axis, block_size) for p in (scale, zero_point))
        return R.multiply(R.subtract(cast(q, out), cast(z, out)), cast(s, out))
    return R.dequantize(q, _vector(scale), _vector(zero_point), axis=ax, out_dtype=out)


def _broadcast_qparam(cx, p, x, axis, block_size):
    """A scale / zero point shaped to broadcast against x (as `ops._broadcast_param`)."""
    if axis is None or not shape_of(p):
        return p
    rank = len(shape_of(x))
    axis %= rank
    if block_size:  # blocked: repeat each scale block_size times along axis, cut to x's size
        rep = cx.emit(R.repeat(p, int(block_size), axis=axis))
        return cx.emit(R.strided_slice(rep, axes=[axis], begin=[0], end=[shape_of(x)[axis]]))
    return cx.emit(R.reshape(p, _channel_shape(rank, axis, int(np.prod(shape_of(p))))))


def _vector(p):
    # Relax wants a scalar or a 1-D per-channel parameter; flatten [C, 1, 1] and the like.
    s = shape_of(p)
    return p if len(s) <= 1 else R.reshape(p, [int(np.prod(s, dtype=np.int64))])


def _int_range(dt: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dt))
    return int(info.min), int(info.max)


RuleFn = Callable[..., Any]

RULES: dict[str, RuleFn] = {
    "conv": conv,  # nn.conv{1,2,3}d (+ bias add); ONNX pads as is
    "conv_transpose": conv_transpose,  # nn.conv{1,2,3}d_transpose (IOHW weight) + crop/pad, bias add
    "linear": linear,  # linear(x, w, b) = x @ w.T + b
    "matmul": matmul,  # matmul with broadcasting
    "batch_norm": batch_norm,  # nn.batch_norm(training=False)[0]
    "layer_norm": layer_norm,  # nn.layer_norm over the trailing dims
    "relu": _unary(R.nn.relu),  # nn.relu
    "sigmoid": _unary(R.sigmoid),  # sigmoid
    "tanh": _unary(R.tanh),  # tanh
    "silu": _unary(R.nn.silu),  # nn.silu
    "hardswish": hardswish,  # x * clip(x + 3, 0, 6) / 6
    "hardsigmoid": hardsigmoid,  # clip(x + 3, 0, 6) / 6
    "neg": _unary(R.negative),  # negative
    "exp": _unary(R.exp),  # exp
    "log": _unary(R.log),  # log
    "sqrt": _unary(R.sqrt),  # sqrt
    "rsqrt": _unary(R.rsqrt),  # rsqrt
    "erf": _unary(R.erf),  # erf
    "abs": _unary(R.abs),  # abs
    "reciprocal": reciprocal,  # 1 / x
    "gelu": gelu,  # nn.gelu | nn.gelu_tanh
    "clip": clip,  # clip; a missing bound is +-inf / the int range
    "add": _binary(R.add),  # add (operands cast to the result dtype)
    "sub": _binary(R.subtract),  # subtract
    "mul": _binary(R.multiply),  # multiply
    "div": _binary(R.divide),  # divide (true division: ints become float first)
    "pow": _binary(R.power),  # power
    "maximum": _binary(R.maximum),  # maximum
    "minimum": _binary(R.minimum),  # minimum
    "equal": _compare(R.equal),  # equal (operands cast to torch's compare dtype)
    "less": _compare(R.less),  # less
    "greater": _compare(R.greater),  # greater
    "less_equal": _compare(R.less_equal),  # less_equal
    "greater_equal": _compare(R.greater_equal),  # greater_equal
    "where": where,  # where (branches cast to the result dtype)
    "einsum": einsum,  # permute/reshape + matmul where it is one, else einsum
    "max_pool": max_pool,  # nn.max_pool{1,2,3}d, ONNX pads, ceil_mode
    "avg_pool": avg_pool,  # nn.avg_pool{1,2,3}d, count_include_pad
    "adaptive_avg_pool": adaptive_avg_pool,  # mean | avg_pool | per-axis averaging matmul
    "adaptive_max_pool": adaptive_max_pool,  # max | max_pool | per-axis window max + concat
    "mean": mean,  # mean over dims
    "sum": reduce_sum,  # sum over dims, in the result dtype
    "softmax": softmax,  # nn.softmax
    "concat": concat,  # concat (operands cast to the result dtype)
    "split": split,  # split at running sums of sizes, then tuple items
    "reshape": reshape,  # reshape with 0 resolved statically
    "flatten": flatten,  # reshape to the flattened static shape
    "squeeze": squeeze,  # squeeze on the listed axes
    "unsqueeze": unsqueeze,  # expand_dims
    "permute": permute,  # permute_dims
    "expand": expand,  # broadcast_to with -1 resolved statically
    "slice": slice_,  # strided_slice with clamped static bounds
    "select": select,  # strided_slice + squeeze
    "resize": resize,  # image.resize2d/3d; per-axis interpolation matmul for 1-d or torch's scale factors
    "pixel_shuffle": pixel_shuffle,  # reshape, permute, reshape
    "pixel_unshuffle": pixel_unshuffle,  # reshape, permute, reshape
    "embedding": embedding,  # take(weight, indices, axis=0)
    "cast": cast_,  # astype; to bool is x != 0
    "identity": identity,  # the input itself
    "dropout": identity,  # inference: the input itself
    "quantize": quantize,  # relax.quantize (per-tensor or per-channel axis)
    "dequantize": dequantize,  # relax.dequantize
}
