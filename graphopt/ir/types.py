"""Tensor types of IR values: a shape and a dtype name.

dtype names are numpy's ("float32", "int64", "int8", "uint8", "bool", "float16");
"bfloat16" is accepted for values (parameters stay numpy and cannot hold it).
A dimension is an int, or a str for a symbolic size (e.g. an ONNX "batch").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DTYPE_ABBREV = {
    "float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64",
    "int8": "i8", "uint8": "u8", "int16": "i16", "int32": "i32", "int64": "i64",
    "bool": "bool",
}

_TORCH_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8,
    "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
_FROM_TORCH = {v: k for k, v in _TORCH_DTYPES.items()}

Dim = int | str


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype '{name}'; known: {sorted(_TORCH_DTYPES)}") from None


def dtype_from_torch(dtype: torch.dtype) -> str:
    try:
        return _FROM_TORCH[dtype]
    except KeyError:
        raise ValueError(f"unsupported torch dtype {dtype}") from None


def dtype_from_numpy(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _TORCH_DTYPES:
        raise ValueError(f"unsupported numpy dtype {name}")
    return name


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of a value."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype not in _TORCH_DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"{self} has symbolic dimensions")
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{DTYPE_ABBREV[self.dtype]}[{','.join(str(d) for d in self.shape)}]"

    @classmethod
    def of(cls, array) -> "TensorType":
        """Type of a numpy array or torch tensor."""
        if isinstance(array, torch.Tensor):
            return cls(tuple(array.shape), dtype_from_torch(array.dtype))
        array = np.asarray(array)
        return cls(tuple(array.shape), dtype_from_numpy(array.dtype))
