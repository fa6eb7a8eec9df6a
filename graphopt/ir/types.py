"""Tensor types of IR values: a shape and a dtype name.

dtype names are numpy's, with ml_dtypes' names for the types numpy lacks:
"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
"int64", "bool", and the quantization dtypes "int4", "uint4" (stored packed, two
per byte) and "float8_e4m3fn", "float8_e5m2". Parameters hold any of them as
numpy arrays (ml_dtypes provides the extra numpy dtypes).

In torch a value of dtype "int4"/"uint4" is carried in an int8/uint8 tensor
(torch has no int4 arithmetic); `torch_dtype` gives that *compute* dtype.
A dimension is an int, or a str for a symbolic size (e.g. an ONNX "batch").
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch


@dataclass(frozen=True)
class DType:
    name: str
    abbrev: str
    bits: int  # storage bits per element
    torch: torch.dtype  # the dtype a torch tensor of this value has
    kind: str  # "float" | "int" | "uint" | "bool"


DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        DType("float32", "f32", 32, torch.float32, "float"),
        DType("float16", "f16", 16, torch.float16, "float"),
        DType("bfloat16", "bf16", 16, torch.bfloat16, "float"),
        DType("float64", "f64", 64, torch.float64, "float"),
        DType("float8_e4m3fn", "f8e4m3", 8, torch.float8_e4m3fn, "float"),
        DType("float8_e5m2", "f8e5m2", 8, torch.float8_e5m2, "float"),
        DType("int4", "i4", 4, torch.int8, "int"),
        DType("uint4", "u4", 4, torch.uint8, "uint"),
        DType("int8", "i8", 8, torch.int8, "int"),
        DType("uint8", "u8", 8, torch.uint8, "uint"),
        DType("int16", "i16", 16, torch.int16, "int"),
        DType("int32", "i32", 32, torch.int32, "int"),
        DType("int64", "i64", 64, torch.int64, "int"),
        DType("bool", "bool", 8, torch.bool, "bool"),
    ]
}
DTYPE_ABBREV = {name: d.abbrev for name, d in DTYPES.items()}

# numpy cannot hold these natively; ml_dtypes gives numpy dtypes of the same name.
_ML_DTYPES = ("bfloat16", "int4", "uint4", "float8_e4m3fn", "float8_e5m2")
_FROM_TORCH = {d.torch: name for name, d in DTYPES.items() if name not in ("int4", "uint4")}

Dim = int | str


def dtype_info(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype '{name}'; known: {', '.join(DTYPES)}") from None


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype that carries values of `name` (int8 for int4, uint8 for uint4)."""
    return dtype_info(name).torch


def carrier_dtype(name: str) -> str:
    """The dtype that carries `name` in torch and TVM: int8 for int4, uint8 for uint4, else itself."""
    return dtype_from_torch(torch_dtype(name))


def numpy_dtype(name: str) -> np.dtype:
    dtype_info(name)
    return np.dtype(getattr(ml_dtypes, name)) if name in _ML_DTYPES else np.dtype(name)


def dtype_from_torch(dtype: torch.dtype) -> str:
    try:
        return _FROM_TORCH[dtype]
    except KeyError:
        raise ValueError(f"unsupported torch dtype {dtype}") from None


def dtype_from_numpy(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"unsupported numpy dtype {name}; known: {', '.join(DTYPES)}")
    return name


def is_float(name: str) -> bool:
    return dtype_info(name).kind == "float"


def to_torch_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor (a copy) of a numpy array of any IR dtype; int4/uint4 widen to int8/uint8."""
    name = dtype_from_numpy(array.dtype)
    array = np.require(array, requirements="C")  # ascontiguousarray would make 0-d arrays 1-d
    if name in ("int4", "uint4"):
        return torch.from_numpy(array.astype(np.int8 if name == "int4" else np.uint8))
    if name in _ML_DTYPES:  # same bits, reinterpreted: bfloat16 and float8
        bits = np.uint16 if DTYPES[name].bits == 16 else np.uint8
        return torch.from_numpy(array.view(bits).copy()).view(DTYPES[name].torch)
    return torch.from_numpy(np.array(array, copy=True))


def from_torch_tensor(tensor: torch.Tensor, dtype: str | None = None) -> np.ndarray:
    """A numpy array of `tensor` as IR dtype `dtype` (default: the tensor's own)."""
    tensor = tensor.detach().cpu()
    name = dtype or dtype_from_torch(tensor.dtype)
    if name in ("int4", "uint4"):
        return tensor.numpy().astype(numpy_dtype(name))
    if name in _ML_DTYPES:
        bits = torch.int16 if DTYPES[name].bits == 16 else torch.uint8
        return tensor.view(bits).numpy().view(numpy_dtype(name)).copy()
    return tensor.numpy().copy()


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of a value."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'; known: {', '.join(DTYPES)}")

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

    @property
    def nbytes(self) -> int:
        """Storage bytes, sub-byte dtypes packed."""
        return -(-self.numel * DTYPES[self.dtype].bits // 8)

    def __str__(self) -> str:
        return f"{DTYPE_ABBREV[self.dtype]}[{','.join(str(d) for d in self.shape)}]"

    @classmethod
    def of(cls, array) -> "TensorType":
        """Type of a numpy array or torch tensor."""
        if isinstance(array, torch.Tensor):
            return cls(tuple(array.shape), dtype_from_torch(array.dtype))
        array = np.asarray(array)
        return cls(tuple(array.shape), dtype_from_numpy(array.dtype))
