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
    """Weight sharing: `data = centroids[indices]`; indices stored at ceil(log2(k)) bits each."""

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
