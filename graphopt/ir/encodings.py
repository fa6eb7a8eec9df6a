"""Compressed storage of a parameter: the `Encoding` protocol and the encodings graphopt ships.

The IR's rule: `Parameter.data` is always the effective tensor, and an encoding
decodes *exactly* to it (same shape, dtype and bits). Emitters and backends read
`data`; the storage writers and the parameter accounting read the encoding.

An encoding is a small immutable object with:
- `decode() -> np.ndarray`: the dense tensor it stands for;
- `nbytes`: the bytes it takes in storage (indices packed at their bit width);
- `describe() -> str`: one short line for the printer and reports;
- optionally `take(indices, axis) -> Encoding | None`: the encoding of
  `np.take(decode(), indices, axis)`, or None when it cannot be sliced
  (`graph.slice_param` then drops it and says so in its return value).

Shipped: `Codebook` (share-weights, quantize-lut), `BinarySign` (binarize),
`PowerOfTwo` (quantize-pow2). Their fields are plain numpy arrays and ints, each
described in the class docstring, so a storage writer can pack them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoding(Protocol):
    def decode(self) -> np.ndarray: ...

    @property
    def nbytes(self) -> int: ...

    def describe(self) -> str: ...


def take_encoding(encoding: Encoding, indices: np.ndarray, axis: int) -> Encoding | None:
    """The sliced encoding, or None when the encoding does not support slicing."""
    take = getattr(encoding, "take", None)
    return None if take is None else take(indices, axis)


@dataclass(frozen=True, eq=False)
class Codebook:
    """Weight sharing and lookup tables: `data = centroids[indices]`; indices stored at ceil(log2(k)) bits each.

    Fields:
    - `centroids`: 1-d, the parameter's dtype; the k shared values (the lookup table);
    - `indices`: integer, the parameter's shape; which centroid each weight takes.
    A masked parameter's codebook (share-weights, quantize-lut) keeps centroid 0 at exactly
    zero for the pruned entries, so sparsity survives sharing.
    """

    centroids: np.ndarray  # [k], the parameter's dtype
    indices: np.ndarray  # integer, the parameter's shape

    def __post_init__(self):
        for name in ("centroids", "indices"):
            a = np.array(getattr(self, name), copy=True)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        if self.centroids.ndim != 1 or not np.issubdtype(self.indices.dtype, np.integer):
            raise ValueError("a codebook needs 1-d centroids and integer indices")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.centroids.size):
            raise ValueError(f"codebook indices must lie in [0, {self.centroids.size})")

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(max(self.centroids.size, 2))))

    def decode(self) -> np.ndarray:
        return self.centroids[self.indices]

    @property
    def nbytes(self) -> int:
        return self.centroids.nbytes + math.ceil(self.indices.size * self.bits / 8)

    def describe(self) -> str:
        return f"codebook(k={self.centroids.size}, {self.bits}-bit indices)"

    def take(self, indices: np.ndarray, axis: int) -> "Codebook":
        return Codebook(self.centroids, np.take(self.indices, indices, axis=axis))


@dataclass(frozen=True, eq=False)
class BinarySign:
    """Binary weights (XNOR-Net): `data = where(signs, scales, -scales)`, one bit per weight plus a scale per slice.

    Fields:
    - `signs`: bool, the parameter's shape; True stores +scale, False stores -scale (1 bit each in storage);
    - `scales`: 1-d, the parameter's dtype; alpha = mean |w| of each slice along `axis`, or one entry per tensor;
    - `axis`: the axis `scales` runs along (a weight's output channels), None for one scale per tensor.
    """

    signs: np.ndarray
    scales: np.ndarray
    axis: int | None = 0

    def __post_init__(self):
        signs = np.array(self.signs, dtype=np.bool_, copy=True)
        scales = np.array(self.scales, copy=True)
        for a in (signs, scales):
            a.setflags(write=False)
        object.__setattr__(self, "signs", signs)
        object.__setattr__(self, "scales", scales)
        if scales.ndim != 1 or not np.issubdtype(scales.dtype, np.floating):
            raise ValueError("binary weights need 1-d float scales")
        if self.axis is None:
            if scales.size != 1:
                raise ValueError(f"a per-tensor binary encoding has one scale, got {scales.size}")
        elif not 0 <= self.axis < max(signs.ndim, 1) or signs.shape[self.axis] != scales.size:
            raise ValueError(f"binary scales ({scales.size}) must match axis {self.axis} of signs {list(signs.shape)}")

    def _broadcast_scales(self) -> np.ndarray:
        if self.axis is None:
            return self.scales.reshape(())
        shape = [1] * self.signs.ndim
        shape[self.axis] = self.scales.size
        return self.scales.reshape(shape)

    def decode(self) -> np.ndarray:
        s = self._broadcast_scales()
        return np.where(self.signs, s, -s).astype(self.scales.dtype, copy=False)

    @property
    def nbytes(self) -> int:
        return math.ceil(self.signs.size / 8) + self.scales.nbytes

    def describe(self) -> str:
        where = "per-tensor" if self.axis is None else f"{self.scales.size} scales on axis {self.axis}"
        return f"binary(1-bit signs, {where})"

    def take(self, indices: np.ndarray, axis: int) -> "BinarySign":
        axis = axis % self.signs.ndim
        scales = np.take(self.scales, indices) if axis == self.axis else self.scales
        return BinarySign(np.take(self.signs, indices, axis=axis), scales, self.axis)


@dataclass(frozen=True, eq=False)
class PowerOfTwo:
    """Signed powers of two: each weight is a `bits`-bit code, so a product with it is a shift.

    Fields:
    - `codes`: uint8, the parameter's shape, stored at `bits` bits each. The top bit
      (`1 << (bits - 1)`) is the sign (set: negative); the low `bits - 1` bits are a
      magnitude code m: m = 0 is zero, m >= 1 is 2 ** (exponent_offset + m - 1);
    - `bits`: code width, 2..8 (2 ** (bits - 1) - 1 nonzero magnitudes);
    - `exponent_offset`: the exponent of the smallest nonzero magnitude (stored in 2 bytes);
    - `dtype`: numpy name of the decoded tensor's dtype (the parameter's).
    """

    codes: np.ndarray
    bits: int
    exponent_offset: int
    dtype: str = "float32"

    def __post_init__(self):
        codes = np.array(self.codes, copy=True)
        codes.setflags(write=False)
        object.__setattr__(self, "codes", codes)
        if codes.dtype != np.uint8:
            raise ValueError(f"power-of-two codes must be uint8, got {codes.dtype}")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"power-of-two codes need 2..8 bits, got {self.bits}")
        if codes.size and int(codes.max()) >= 1 << self.bits:
            raise ValueError(f"power-of-two codes must lie in [0, {1 << self.bits}) for {self.bits} bits")

    @property
    def levels(self) -> int:
        """Nonzero magnitudes: 2 ** exponent_offset .. 2 ** (exponent_offset + levels - 1)."""
        return (1 << (self.bits - 1)) - 1

    def decode(self) -> np.ndarray:
        m = (self.codes & self.levels).astype(np.int64)
        magnitude = np.where(m > 0, np.ldexp(1.0, self.exponent_offset + np.maximum(m, 1) - 1), 0.0)
        negative = (self.codes >> (self.bits - 1)).astype(bool) & (m > 0)
        return np.where(negative, -magnitude, magnitude).astype(self.dtype)

    @property
    def nbytes(self) -> int:
        return math.ceil(self.codes.size * self.bits / 8) + 2

    def describe(self) -> str:
        hi = self.exponent_offset + self.levels - 1
        return f"pow2({self.bits}-bit codes, ±2^{self.exponent_offset}..2^{hi} and 0)"

    def take(self, indices: np.ndarray, axis: int) -> "PowerOfTwo":
        return PowerOfTwo(np.take(self.codes, indices, axis=axis), self.bits, self.exponent_offset, self.dtype)
