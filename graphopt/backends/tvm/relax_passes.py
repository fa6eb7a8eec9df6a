"""graphopt's own Relax passes, run in order before legalisation.

``schedule.legalize`` runs ``graphopt_relax_passes(target)`` first, and both
``schedule.build`` and tuning's task extraction go through ``legalize``, so
every pass here runs exactly once on every module that is built or tuned, and
tuned records match the build. A pass is one ``RelaxPass`` entry in
``GRAPHOPT_RELAX_PASSES``: a name, a one-line summary and a factory taking the
target (for target-dependent rewrites such as QDQ -> integer conv/matmul).

Passes:

- ``fold-qdq-round-trip``: ``quantize(dequantize(q, s, z), s, z) => q``, the
  Relax form of the graph's quantize/dequantize (``lower_ops`` emits
  ``R.quantize``/``R.dequantize`` for per-tensor and per-channel parameters,
  constants passed as is or through ``R.reshape`` to 1-D; its spelled-out form
  for blocked, broadcasting or narrowed parameters is left alone).

  Exact, not approximate. Relax computes ``dequantize`` as ``fl(n * s)`` in
  float32 with ``n = q - z`` (an integer, exact in int32 and float32), and
  ``quantize`` as ``clip(round(fl(x / s)) + z)``. The pass fires only when both
  ops have the same constant float32 scales and zero points, the same axis,
  dequantize's output is float32, quantize's output dtype is q's (an integer
  of at most 16 bits), and every scale is finite with ``|s| >= 2**-126``
  (normal: no NaN, inf, zero or subnormal). Then ``n * s`` neither overflows
  (checked: ``max|n| * max|s| < 2**127``) nor underflows, so
  ``fl(fl(n * s) / s) = n (1 + d1)(1 + d2)`` with ``|di| <= u = 2**-24``: an
  error of at most ``|n| (2u + u**2) < 0.5`` for ``|n| < 2**22``, so ``round``
  returns ``n`` exactly, ``n + z = q`` lies in q's range and the clip and cast are identities.
  The float intermediate is removed, not changed: no NaN, inf or signed zero
  reaches the result either way.

- ``qdq-to-integer`` (``relax_integer.py``): dequantize -> conv2d / matmul
  (-> bias, relu/clip -> quantize) as int8/uint8 conv2d / matmul with int32
  accumulation and float32 requantisation; within one quantisation step of
  the float reference and of onnxruntime's QLinearConv / QLinearMatMul.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import PatternMatchingRewriter, is_const, is_op, wildcard
from tvm.target import Target

from .relax_integer import qdq_to_integer
from .targets import TargetSpec, resolve_target

__all__ = ["GRAPHOPT_RELAX_PASSES", "RelaxPass", "fold_qdq_round_trip", "graphopt_relax_passes"]


@dataclass(frozen=True)
class RelaxPass:
    """One entry of the pipeline: its name, what it does, and how to make it for a target."""

    name: str
    summary: str
    make: Callable[[Target], tvm.transform.Pass]


# --- fold-qdq-round-trip -------------------------------------------------------------

_FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 2**-126, the smallest normal


def _qparam() -> tuple[relax.dpl.DFPattern, relax.dpl.DFPattern]:
    """A constant, or a constant reshaped (lower_ops flattens [C, 1, 1] to [C])."""
    c = is_const()
    return c | is_op("relax.reshape")(c, wildcard()), c


_Q = wildcard()
_DS, _DS_C = _qparam()
_DZ, _DZ_C = _qparam()
_QS, _QS_C = _qparam()
_QZ, _QZ_C = _qparam()
_DEQ = is_op("relax.dequantize")(_Q, _DS, _DZ)
_QUANT = is_op("relax.quantize")(_DEQ, _QS, _QZ)


def _same(a: tvm.ir.expr.Constant, b: tvm.ir.expr.Constant) -> np.ndarray | None:
    """The flattened values when both constants hold the same dtype and values, else None."""
    x, y = a.value.numpy().ravel(), b.value.numpy().ravel()
    return x if x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) else None


def _round_trip_is_exact(quant: relax.Call, deq: relax.Call, m: dict) -> bool:
    q_ty = m[_Q].ty
    if not isinstance(q_ty, relax.TensorType) or q_ty.ndim < 0:
        return False
    q_dtype = str(q_ty.dtype)
    if q_dtype not in ("int8", "uint8", "int16", "uint16"):
        return False
    if str(deq.attrs.out_dtype) != "float32" or str(quant.attrs.out_dtype) != q_dtype:
        return False
    rank = max(q_ty.ndim, 1)
    if int(deq.attrs.axis) % rank != int(quant.attrs.axis) % rank:
        return False
    s, z = _same(m[_DS_C], m[_QS_C]), _same(m[_DZ_C], m[_QZ_C])
    if s is None or z is None or s.dtype != np.float32 or z.dtype.kind not in "iu":
        return False
    abs_s = np.abs(s.astype(np.float64))
    if not (np.all(np.isfinite(abs_s)) and np.all(abs_s >= _FLOAT32_TINY)):
        return False
    info = np.iinfo(q_dtype)
    z64 = z.astype(np.int64)
    n_max = int(max(np.max(np.abs(info.min - z64)), np.max(np.abs(info.max - z64))))
    return n_max < 2**22 and n_max * float(np.max(abs_s)) < 2.0**127


def _fold_round_trip(quant: relax.Expr, m: dict) -> relax.Expr:
    # quantize(dequantize(q, s, z), s, z) => q   (exact; see the module docstring)
    return m[_Q] if _round_trip_is_exact(quant, m[_DEQ], m) else quant


_ROUND_TRIP = PatternMatchingRewriter.from_pattern(_QUANT, _fold_round_trip)


def fold_qdq_round_trip() -> tvm.transform.Pass:
    """The ``fold-qdq-round-trip`` pass (a module pass; unused bindings are removed)."""

    @tvm.transform.module_pass(opt_level=0, name="graphopt.FoldQDQRoundTrip")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(_ROUND_TRIP(mod))

    return _pass


# --- the pipeline --------------------------------------------------------------------

GRAPHOPT_RELAX_PASSES: tuple[RelaxPass, ...] = (
    RelaxPass(
        "fold-qdq-round-trip",
        "quantize(dequantize(q, s, z), s, z) => q, exactly",
        lambda _target: fold_qdq_round_trip(),
    ),
    RelaxPass(
        "qdq-to-integer",
        "dequantize -> conv2d / matmul (-> quantize) => int8 inputs, int32 accumulation, requantisation",
        lambda _target: qdq_to_integer(),
    ),
)


def graphopt_relax_passes(target: TargetSpec) -> list[tvm.transform.Pass]:
    """graphopt's Relax passes for ``target``, in the order ``legalize`` runs them."""
    target = resolve_target(target)
    return [p.make(target) for p in GRAPHOPT_RELAX_PASSES]
