"""Scale and zero point from a real range, for a quantized dtype.

Activations: `activation_qparams(lo, hi, dtype, symmetric)`. Symmetric ranges
are [-t, t] with t = max(|lo|, |hi|): int8 gets zero point 0, uint8 gets 128.
Asymmetric ranges always contain 0 (so zero padding and ReLU's 0 are exact).
symmetric="auto" picks per range: symmetric when the shorter side reaches
`ROUGHLY_SYMMETRIC` of the longer (the asymmetric step would be at most ~10 %
finer, not worth a zero point), asymmetric otherwise (ReLU, GELU and softmax
outputs, which a symmetric range would give half its levels for nothing).
Weights: `weight_qparams(w, axis, bits)` is symmetric over the narrow range
[-(2^(bits-1)-1), 2^(bits-1)-1] (int8: [-127, 127], int4: [-7, 7]), per channel
along `axis` (None = per tensor), zero point 0.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.ops import quant_range
from graphopt.ir.types import numpy_dtype

WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
# floor on a scale: the smallest normal float32, not a larger "small" number: a model whose activations
# are all ~1e-9 (seeded, untrained MobileNetV2) must keep them, as onnxruntime's quantizer does
_TINY = np.finfo(np.float32).tiny
# the scale of an all-zero tensor (a layer norm over one feature, a pruned channel), as onnxruntime's quantizer
# gives it: any scale holds 0 exactly, and a tiny one made the int32 bias scale s_x * s_w underflow, the bias
# stay float, and onnxruntime's bias quantization saturate it (issue 12, fuzz bug 7)
_ZERO_RANGE_SCALE = 1.0
ROUGHLY_SYMMETRIC = 0.8  # min(|lo|, hi) / max(|lo|, hi) from which symmetric="auto" stays symmetric


def is_symmetric(lo: float, hi: float, symmetric: bool | str = "auto") -> bool:
    """Whether the range [lo, hi] is quantized symmetrically under the option `symmetric` (True, False, "auto")."""
    if symmetric != "auto":
        return bool(symmetric)
    short, long = sorted((max(-float(lo), 0.0), max(float(hi), 0.0)))
    return long == 0.0 or short >= ROUGHLY_SYMMETRIC * long


def activation_qparams(
    lo: float, hi: float, dtype: str = "int8", symmetric: bool | str = True
) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32 0-d, zero point 0-d of `dtype`) covering the real range [lo, hi]."""
    qmin, qmax = quant_range(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"cannot quantize the range [{lo}, {hi}]: it is not finite")
    if is_symmetric(lo, hi, symmetric):
        t = max(-lo, hi)
        scale = np.float32(max(2.0 * t / (qmax - qmin), _TINY) if t > 0 else _ZERO_RANGE_SCALE)
        zero = (qmin + qmax + 1) // 2  # int8: 0, uint8: 128
    else:
        scale = np.float32(max((hi - lo) / (qmax - qmin), _TINY) if hi > lo else _ZERO_RANGE_SCALE)
        zero = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return np.asarray(scale, np.float32), np.asarray(zero, dtype=dtype)


def weight_qparams(w: np.ndarray, axis: int | None, bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int weight, float32 scale, zero point), int8 or int4 (`bits`): narrow symmetric, per channel along `axis`."""
    if bits not in (4, 8):
        raise ValueError(f"weights are quantized to 4 or 8 bits, not {bits}")
    qmax = WEIGHT_QMAX if bits == 8 else 2 ** (bits - 1) - 1
    dtype = numpy_dtype(f"int{bits}")
    w = np.asarray(w, np.float32)
    if axis is None:
        t = np.asarray(np.max(np.abs(w)) if w.size else 0.0, np.float32)
    else:
        others = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        t = np.max(np.abs(w), axis=others) if w.size else np.zeros(w.shape[axis], np.float32)
    scale = np.where(t > 0, np.maximum(t / qmax, _TINY), _ZERO_RANGE_SCALE).astype(np.float32)
    zero = np.zeros(scale.shape, dtype)
    return quantize_array(w, scale, np.zeros(scale.shape), axis, -qmax, qmax).astype(dtype), scale, zero


def quantize_array(x, scale, zero_point, axis: int | None, qmin: int, qmax: int) -> np.ndarray:
    """clip(round(x / scale) + zero_point, qmin, qmax) in float64, per channel along `axis` when given."""
    x = np.asarray(x, np.float64)
    s, z = np.asarray(scale, np.float64), np.asarray(zero_point, np.float64)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return np.clip(np.round(x / s) + z, qmin, qmax)


def fake_quantize(x, lo: float, hi: float, dtype: str = "int8", symmetric: bool | str = True) -> np.ndarray:
    """x quantized to the range [lo, hi] and back (what a Q/DQ pair computes), float64."""
    scale, zero = activation_qparams(lo, hi, dtype, symmetric)
    qmin, qmax = quant_range(dtype)
    return (quantize_array(x, scale, zero, None, qmin, qmax) - float(zero)) * float(scale)
