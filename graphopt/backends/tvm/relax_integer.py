"""``qdq-to-integer``: dequantize -> conv2d / matmul (-> quantize) computed in integers.

The Relax that ``lower.py`` makes of a Q/DQ graph computes in float: both
operands are dequantized, multiplied in float32, and quantized again. This pass
rewrites each such product into an integer program with int32 accumulation:

    # before                                   # after
    x = R.dequantize(xq, sx, zx)               acc = R.nn.conv2d(pad(xq, zx), wq, out_dtype="int32")
    w = R.dequantize(wq, sw, 0, axis=0)              - zx * sum(wq[o])               (exact, int32)
    y = R.nn.conv2d(x, w)  | R.matmul(x, w)    acc = acc + round(b / (sx * sw))      (bias in int32)
    y = R.add(y, b)            (optional)      y  = round(float32(acc) * M) + zo     M = sx * sw / so
    y = R.nn.relu(y) | R.clip  (optional)      yq = astype(clip(y, lo, hi), int8)    (relu/clip: lo, hi)
    yq = R.quantize(y, so, zo)

Without a trailing quantize the product is dequantized instead,
``y = float32(acc) * (sx * sw)``, and the float ops after it stay as they were.

What matches:

- conv2d (NCHW / OIHW, any stride, padding, dilation, groups): x per tensor,
  int8 or uint8, any zero point; w a constant int8 tensor, per tensor or per
  output channel (axis 0), zero point 0.
- matmul (linear is ``matmul(x, permute_dims(w))``; attention is two
  activations), ranks >= 2: A per tensor with any zero point; B per tensor with
  any zero point, or per channel along its last axis with zero point 0. Either
  may pass through ``permute_dims`` after its dequantize.
- the trailing quantize is ``R.quantize`` per tensor to int8 or uint8, reached
  through an optional bias add (a constant along the channel axis: conv's axis
  1, matmul's last) and an optional relu or clip, each used only on that path.

Everything else (dequantize feeding softmax, float16, a weight zero point,
per-channel activations, conv1d/3d, ``lower_ops``' spelled-out quantize for a
narrowed [qmin, qmax]) is left in float.

Arithmetic, and why it matches onnxruntime's QDQ execution within one step:

- The integer ops take the int8/uint8 tensors themselves with
  ``out_dtype="int32"`` (the form VNNI / sdot tensorisation matches later). Zero
  points are corrections: conv pads x with ``zx`` (the real zero) and subtracts
  the constant ``zx * sum(wq[o])``. A grouped (not depthwise) conv keeps its zero
  padding and subtracts ``zx * conv(ones, wq)``, a constant per output position:
  dlight's GPU rules fail on a pad fused into a grouped conv, float or integer
  ("Cross-thread reduction requires all the reduction-related loops to be the
  deepest"). matmul uses
  ``sum (a - za)(b - zb) = a@b - za*colsum(b) - zb*rowsum(a) + K*za*zb``. The
  accumulator is exact: a match needs ``K * 255 * 255 < 2**31``.
- Requantisation in float32, as onnxruntime's QLinearConv / QLinearMatMul do:
  ``M = float32(float32(sx * sw) / so)``, ``round(float32(acc) * M)`` rounding
  half to even (ONNX QuantizeLinear; Relax's round is nearbyint), plus ``zo``,
  clipped to the output range narrowed by a relu (``[zo, hi]``) or clip
  (``[round(lo / so) + zo, round(hi / so) + zo]``; exact, since quantisation is
  monotone). The float bias becomes ``round(b / (sx * sw))`` in int32, as
  onnxruntime's quantizer writes it (a bias already so quantized comes back exactly).
  The float reference rounds once more (the sum in float32), so results differ
  from it by at most one quantisation step, at ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import tvm
from tvm import relax

from .lower_ops import const
from .schedules.dot_product import DotProduct, dot_product

__all__ = ["qdq_to_integer"]

R = relax.op
_Q_DTYPES = ("int8", "uint8")
_INT32 = np.iinfo(np.int32)
_MAX_K = (2**31 - 1) // (255 * 255)  # products accumulated in int32 without overflow


# --- reading the lowered module ----------------------------------------------------------


def _call(expr: relax.Expr, var2val: dict, op: str | None = None) -> relax.Call | None:
    """The call bound to `expr` (a var followed through its binding), optionally of `op`."""
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    return expr if op is None or expr.op.name == op else None


def _const(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    """The value of a constant, followed through reshape, astype and dequantize of constants."""
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    call = _call(expr, var2val)
    if call is None:
        return None
    name = call.op.name
    if name in ("relax.reshape", "relax.astype"):
        v = _const(call.args[0], var2val)
        if v is None:
            return None
        return v.reshape(_shape(call)) if name == "relax.reshape" else v.astype(str(call.attrs.dtype))
    if name == "relax.dequantize" and str(call.attrs.out_dtype) == "float32":
        q, s, z = (_const(a, var2val) for a in call.args)
        if q is None or s is None or z is None:
            return None
        shape = [1] * q.ndim
        if s.size > 1:
            shape[int(call.attrs.axis) % q.ndim] = s.size
        s, z = s.reshape(shape or s.shape), z.reshape(shape or z.shape)
        return (q.astype(np.float32) - z.astype(np.float32)) * s.astype(np.float32)
    return None


def _prim(v: relax.Expr) -> float:
    """A clip bound: a PrimValue holding a float or int immediate."""
    value = v.value
    return float(value if isinstance(value, (int, float)) else value.value)


def _shape(e: relax.Expr) -> list:
    # A symbolic dim (a dynamic batch) stays a tir expression; the rules read only static ones.
    return [int(d) if isinstance(d, tvm.tirx.IntImm) else d for d in e.ty.shape.values]


def _dtype(e: relax.Expr) -> str:
    return str(e.ty.dtype)


def _is_float32_tensor(e: relax.Expr) -> bool:
    return isinstance(e.ty, relax.TensorType) and str(e.ty.dtype) == "float32" and e.ty.ndim >= 0


@dataclass(frozen=True)
class _Operand:
    """A dequantized operand ``(q - zero) * scale``, per tensor or per channel along ``axis``,
    then permuted by ``perm`` (None: not permuted); ``axis`` counts in the permuted layout."""

    q: relax.Expr
    scale: np.ndarray  # float32, 1 element (per tensor) or one per channel
    zero: np.ndarray  # int64, as scale
    axis: int | None
    perm: tuple[int, ...] | None
    value: np.ndarray | None  # q's constant value, permuted, when q is a constant

    @property
    def per_tensor(self) -> bool:
        return self.axis is None

    @property
    def z(self) -> int:
        return int(self.zero.reshape(-1)[0])


def _operand(expr: relax.Expr, var2val: dict) -> _Operand | None:
    """``expr`` as a dequantized int8/uint8 tensor, possibly permuted, else None."""
    perm = None
    permute = _call(expr, var2val, "relax.permute_dims")
    if permute is not None:
        rank = len(_shape(permute))
        axes = permute.attrs.axes
        perm = tuple(int(a) % rank for a in axes) if axes is not None else tuple(reversed(range(rank)))
        expr = permute.args[0]
    deq = _call(expr, var2val, "relax.dequantize")
    if deq is None or str(deq.attrs.out_dtype) != "float32":
        return None
    q = deq.args[0]
    scale, zero = _const(deq.args[1], var2val), _const(deq.args[2], var2val)
    if _dtype(q) not in _Q_DTYPES or scale is None or zero is None or scale.dtype != np.float32:
        return None
    scale, zero = scale.reshape(-1), zero.reshape(-1).astype(np.int64)
    if not np.all(np.isfinite(scale)) or scale.size != zero.size:
        return None
    rank = len(_shape(q))
    axis = None if scale.size == 1 else int(deq.attrs.axis) % rank
    if axis is not None and perm is not None:
        axis = perm.index(axis)
    value = _const(q, var2val)
    if value is not None and perm is not None:
        value = np.transpose(value, perm)
    return _Operand(q, scale, zero, axis, perm, value)


@dataclass(frozen=True)
class _Product:
    """An integer conv2d or matmul: the original call, its operands, and the accumulator's
    scale per output channel (shaped to broadcast against the output)."""

    call: relax.Call
    x: _Operand
    w: _Operand
    scale: np.ndarray  # float32: sx * sw, [1, C, 1, 1] for conv, [C] for matmul, or [] per tensor
    channel_axis: int

    def per_channel(self, v: np.ndarray) -> np.ndarray:
        """A vector of one value per output channel, shaped to broadcast against the output."""
        # by op, not by axis: a 2-d matmul's channel axis is 1 too
        return v.reshape(1, -1, 1, 1) if self.call.op.name == "relax.nn.conv2d" else v.reshape(-1)


def _product(expr: relax.Expr, var2val: dict) -> _Product | None:
    call = _call(expr, var2val)
    if call is None or not _is_float32_tensor(call):
        return None
    if call.op.name == "relax.nn.conv2d":
        return _conv_product(call, var2val)
    if call.op.name == "relax.matmul":
        return _matmul_product(call, var2val)
    return None


def _conv_product(call: relax.Call, var2val: dict) -> _Product | None:
    a = call.attrs
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    x, w = _operand(call.args[0], var2val), _operand(call.args[1], var2val)
    if x is None or w is None or not x.per_tensor or x.perm is not None or w.perm is not None:
        return None
    if w.value is None or w.value.dtype != np.int8 or np.any(w.zero) or w.axis not in (None, 0):
        return None
    if int(np.prod(w.value.shape[1:])) > _MAX_K:
        return None
    scale = (x.scale * w.scale).astype(np.float32)
    return _Product(call, x, w, scale.reshape(1, -1, 1, 1) if w.axis == 0 else scale.reshape(()), 1)


def _matmul_product(call: relax.Call, var2val: dict) -> _Product | None:
    a, b = _operand(call.args[0], var2val), _operand(call.args[1], var2val)
    if a is None or b is None or not a.per_tensor:
        return None
    ranks = len(_shape(call.args[0])), len(_shape(call.args[1]))
    if min(ranks) < 2 or _shape(call.args[0])[-1] > _MAX_K:
        return None
    if not b.per_tensor and (b.axis != ranks[1] - 1 or np.any(b.zero)):
        return None
    scale = (a.scale * b.scale).astype(np.float32)
    return _Product(call, a, b, scale if not b.per_tensor else scale.reshape(()), len(_shape(call)) - 1)


@dataclass(frozen=True)
class _Requantized:
    """quantize([relu | clip](product [+ bias])): the product and what follows it."""

    product: _Product
    bias: np.ndarray | None  # float64, one per output channel (`_Product.per_channel`)
    out_scale: np.float32
    out_zero: int
    lo: float  # the output's integer range, narrowed by relu / clip
    hi: float
    out_dtype: str


def _single_use(expr: relax.Expr, uses: dict) -> bool:
    return isinstance(expr, relax.Var) and uses.get(expr, 0) == 1


def _bias(add: relax.Call, var2val: dict, uses: dict) -> tuple[_Product, np.ndarray] | None:
    for acc, other in (add.args, reversed(add.args)):
        product = _product(acc, var2val) if _single_use(acc, uses) else None
        b = _const(other, var2val)
        if product is None or b is None or not np.issubdtype(b.dtype, np.floating):
            continue
        rank = len(_shape(product.call))
        if b.ndim > rank:
            continue
        full = b.reshape([1] * (rank - b.ndim) + list(b.shape))
        channels = _shape(product.call)[product.channel_axis]
        if any(d != 1 for i, d in enumerate(full.shape) if i != product.channel_axis):
            continue
        if full.shape[product.channel_axis] not in (1, channels):
            continue
        vec = np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float64)
        return product, product.per_channel(vec)
    return None


def _requantized(quant: relax.Call, var2val: dict, uses: dict) -> _Requantized | None:
    out_dtype = str(quant.attrs.out_dtype)
    so, zo = _const(quant.args[1], var2val), _const(quant.args[2], var2val)
    if out_dtype not in _Q_DTYPES or so is None or zo is None or so.size != 1 or so.dtype != np.float32:
        return None
    so, zo = np.float32(so.reshape(-1)[0]), int(zo.reshape(-1)[0])
    if not (np.isfinite(so) and so > 0):
        return None
    info = np.iinfo(out_dtype)
    lo, hi = float(info.min), float(info.max)
    y = quant.args[0]
    act = _call(y, var2val) if _single_use(y, uses) else None
    if act is not None and act.op.name == "relax.nn.relu":
        lo, y = max(lo, zo), act.args[0]
    elif act is not None and act.op.name == "relax.clip":
        a_min, a_max = (_prim(v) for v in act.args[1:3])
        if np.isfinite(a_min):
            lo = max(lo, float(np.rint(np.float32(a_min) / so)) + zo)
        if np.isfinite(a_max):
            hi = min(hi, float(np.rint(np.float32(a_max) / so)) + zo)
        y = act.args[0]
    if lo > hi:
        return None
    bias = None
    product = _product(y, var2val) if _single_use(y, uses) else None
    if product is None:
        add = _call(y, var2val, "relax.add") if _single_use(y, uses) else None
        found = _bias(add, var2val, uses) if add is not None else None
        if found is None:
            return None
        product, bias = found
    return _Requantized(product, bias, so, zo, lo, hi, out_dtype)


def _use_counts(func: relax.Function) -> dict:
    uses: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for v in relax.analysis.free_vars(binding.value):
                uses[v] = uses.get(v, 0) + 1
    for v in relax.analysis.free_vars(func.body.body):
        uses[v] = uses.get(v, 0) + 1
    return uses


@dataclass(frozen=True)
class _MaxPool:
    """quantize(max_pool2d(dequantize(q))), both per tensor: pooled in integers, then requantized if the
    two quantisations differ (max commutes with the monotone requantisation; as in float, a window's
    padding never wins over the input it reads)."""

    pool: relax.Call
    q: relax.Expr
    dequant: tuple[float, int]  # the input's (scale, zero point)
    quant: tuple[float, int]  # the output's
    out_dtype: str


def _scale_zero(call: relax.Call, var2val: dict) -> tuple[float, int] | None:
    s, z = _const(call.args[1], var2val), _const(call.args[2], var2val)
    if s is None or z is None or s.size != 1 or z.size != 1 or s.dtype != np.float32 or not s.reshape(-1)[0] > 0:
        return None
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])


def _max_pool(quant: relax.Call, var2val: dict, uses: dict) -> _MaxPool | None:
    y = quant.args[0]
    pool = _call(y, var2val, "relax.nn.max_pool2d") if _single_use(y, uses) else None
    deq = _call(pool.args[0], var2val, "relax.dequantize") if pool is not None else None
    if deq is None or str(deq.attrs.out_dtype) != "float32" or _dtype(deq.args[0]) not in _Q_DTYPES:
        return None
    dequant, requant = _scale_zero(deq, var2val), _scale_zero(quant, var2val)
    out_dtype = str(quant.attrs.out_dtype)
    if dequant is None or requant is None or out_dtype not in _Q_DTYPES:
        return None
    return _MaxPool(pool, deq.args[0], dequant, requant, out_dtype)


def _plan(func: relax.Function) -> dict:
    """binding var -> _Requantized (quantize bindings), _MaxPool (quantize after a float max-pool)
    or _Product (float-output products)."""
    var2val = relax.analysis.get_var2val(func)
    uses = _use_counts(func)
    plan: dict = {}
    claimed: set = set()
    for var, value in var2val.items():
        quant = _call(value, var2val, "relax.quantize")
        found = _requantized(quant, var2val, uses) if quant is not None else None
        if found is not None:
            plan[var] = found
            claimed.add(found.product.call)
        elif quant is not None and (pool := _max_pool(quant, var2val, uses)) is not None:
            plan[var] = pool
    for var, value in var2val.items():
        if var in plan or not isinstance(value, relax.Call):
            continue
        product = _product(value, var2val)
        if product is not None and not any(product.call.same_as(c) for c in claimed):
            plan[var] = product
    return plan


# --- emitting the integer program --------------------------------------------------------


@relax.expr_functor.mutator
class _IntegerRewriter(relax.PyExprMutator):
    """Re-emits each planned binding as its integer program; everything else as it was."""

    def __init__(self, mod: tvm.IRModule, dot: DotProduct | None):
        super().__init__(mod)
        self.mod = mod
        self.dot = dot  # the target's int8 dot product: operands are shaped for it
        self.plan: dict = {}

    def rewrite(self) -> tuple[tvm.IRModule, int]:
        """The module with every planned binding rewritten, and how many were."""
        count = 0
        for gv, func in self.mod.functions_items():
            if isinstance(func, relax.Function):
                self.plan = _plan(func)
                if self.plan:
                    count += len(self.plan)
                    self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get(), count

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        item = self.plan.get(binding.var)
        if item is None:
            return super().visit_var_binding_(binding)
        if isinstance(item, _Requantized):
            expr = self._requantize(item)
        elif isinstance(item, _MaxPool):
            expr = self._max_pool(item)
        else:
            expr = self._dequantize(item)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(expr, binding.var.name))
        return None

    def _emit(self, expr: relax.Expr) -> relax.Var:
        return self.builder_.emit(expr)

    def _integer(self, op: _Operand) -> relax.Expr:
        """The operand's integer tensor, in the rewritten module, permuted like the original."""
        if op.value is not None:
            return const(op.value, str(op.value.dtype))
        q = self.visit_expr(op.q)
        return self._emit(R.permute_dims(q, list(op.perm))) if op.perm is not None else q

    def _unsigned(self, x: relax.Expr, zero: int, weight: np.ndarray | None) -> tuple[relax.Expr, int]:
        """int8 data as uint8 (``x + 128``, zero point ``+ 128``: the same ``x - zero``) when the target's
        dot product takes uint8 data and the int8 ``weight`` (constant) will be tensorized with it."""
        if self.dot is None or self.dot.data_dtype != "uint8" or _dtype(x) != "int8" or weight is None:
            return x, zero
        shifted = self._emit(R.add(self._emit(R.astype(x, "int32")), const(128, "int32")))
        return self._emit(R.astype(shifted, "uint8")), zero + 128

    def _max_pool(self, m: _MaxPool) -> relax.Expr:
        q = self.visit_expr(m.q)
        pooled = relax.Call(m.pool.op, [q], m.pool.attrs)
        if m.dequant == m.quant and _dtype(q) == m.out_dtype:
            return pooled
        (s, z), (so, zo) = m.dequant, m.quant
        y = self._emit(R.dequantize(self._emit(pooled), const(np.float32(s), "float32"), const(z, _dtype(q))))
        return R.quantize(y, const(np.float32(so), "float32"), const(zo, m.out_dtype), out_dtype=m.out_dtype)

    def _accumulate(self, p: _Product) -> relax.Var:
        """The exact int32 product of the operands' ``q - zero``."""
        if p.call.op.name == "relax.nn.conv2d":
            return self._conv(p)
        return self._matmul(p)

    def _conv(self, p: _Product) -> relax.Var:
        a, x, zx, w = p.call.attrs, self._integer(p.x), p.x.z, p.w.value
        pads, groups = [int(v) for v in a.padding], int(a.groups)
        strides, dilation = [int(v) for v in a.strides], [int(v) for v in a.dilation]
        channels = _shape(p.call.args[0])[1]
        grouped = 1 < groups < channels
        if groups < channels or channels == 1:  # not depthwise: the dot-product rule's shape
            x, zx = self._unsigned(x, zx, w)
        # input channels padded to the dot product's reduction width (zero weights; the stem's 3 -> 4)
        extra = (-channels) % self.dot.reduce if self.dot is not None and groups == 1 else 0
        x_pad = [0, 0, 0, extra, 0, 0, 0, 0]
        if zx and any(pads) and not grouped:  # pad with the real zero, zx, then convolve unpadded
            top, left, bottom, right = pads
            x_pad[4:] = [top, bottom, left, right]
            pads = [0, 0, 0, 0]
        if any(x_pad):
            x = self._emit(R.nn.pad(x, x_pad, pad_value=float(zx)))
        w_padded = np.pad(w, ((0, 0), (0, extra), (0, 0), (0, 0))) if extra else w
        acc = self._emit(
            R.nn.conv2d(
                x,
                const(w_padded, "int8"),
                strides=strides,
                padding=pads,
                dilation=dilation,
                groups=groups,
                out_dtype="int32",
            )
        )
        if not zx:
            return acc
        if any(pads):  # zero-padded: zx counts only where the window reads x, a constant per position
            ones = torch.nn.functional.pad(torch.ones([1, *_shape(p.call.args[0])[1:]], dtype=torch.float64),
                                           (pads[1], pads[3], pads[0], pads[2]))  # fmt: skip
            taps = torch.nn.functional.conv2d(ones, torch.from_numpy(w.astype(np.float64)), stride=strides,
                                              dilation=dilation, groups=groups)  # fmt: skip
            corr = zx * taps.round().to(torch.int64).numpy()
        else:  # sum (x - zx) w = sum x w - zx * sum w
            corr = zx * w.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
        return self._emit(R.subtract(acc, const(corr, "int32")))

    def _matmul(self, p: _Product) -> relax.Var:
        a, b, za, zb = self._integer(p.x), self._integer(p.w), p.x.z, p.w.z
        if p.w.value is not None and p.w.value.dtype == np.int8:
            a, za = self._unsigned(a, za, p.w.value)
        acc = self._emit(R.matmul(a, b, out_dtype="int32"))
        k = _shape(p.call.args[0])[-1]
        if za:  # - za * colsum(b)
            if p.w.value is not None:
                colsum = const(p.w.value.astype(np.int64).sum(axis=-2, keepdims=True), "int32")
            else:
                colsum = self._emit(R.sum(self._emit(R.astype(b, "int32")), axis=[-2], keepdims=True))
            acc = self._emit(R.subtract(acc, self._emit(R.multiply(colsum, const(za, "int32")))))
        if zb:  # - zb * rowsum(a)
            rowsum = self._emit(R.sum(self._emit(R.astype(a, "int32")), axis=[-1], keepdims=True))
            acc = self._emit(R.subtract(acc, self._emit(R.multiply(rowsum, const(zb, "int32")))))
        if za and zb:  # + K * za * zb
            acc = self._emit(R.add(acc, const(k * za * zb, "int32")))
        return acc

    def _dequantize(self, p: _Product) -> relax.Expr:
        # y = float32(acc) * (sx * sw)
        acc = self._accumulate(p)
        return R.multiply(self._emit(R.astype(acc, "float32")), const(p.scale, "float32"))

    def _requantize(self, r: _Requantized) -> relax.Expr:
        # yq = astype(clip(round(float32(acc + bq) * M) + zo, lo, hi))
        p = r.product
        acc = self._accumulate(p)
        if r.bias is not None:
            bq = np.clip(np.rint(r.bias / p.scale.astype(np.float64)), _INT32.min, _INT32.max)
            acc = self._emit(R.add(acc, const(bq, "int32")))
        m = (p.scale / r.out_scale).astype(np.float32)
        y = self._emit(R.round(self._emit(R.multiply(self._emit(R.astype(acc, "float32")), const(m, "float32")))))
        y = self._emit(R.add(y, const(r.out_zero, "float32")))
        return R.astype(self._emit(R.clip(y, r.lo, r.hi)), r.out_dtype)


def qdq_to_integer(target: tvm.target.Target | None = None) -> tvm.transform.Pass:
    """The ``qdq-to-integer`` pass (a module pass; bindings left unused are removed).

    ``target`` (default: the current target when the pass runs) decides the operand shapes: with an int8
    dot product (x86 VNNI, aarch64 sdot) data is shifted to the dtype it takes and a conv's input
    channels are padded to its reduction width."""

    @tvm.transform.module_pass(opt_level=0, name="graphopt.QDQToInteger")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        tgt = target if target is not None else tvm.target.Target.current(allow_none=True)
        rewritten, count = _IntegerRewriter(mod, dot_product(tgt) if tgt is not None else None).rewrite()
        return relax.transform.DeadCodeElimination()(rewritten) if count else mod

    return _pass
