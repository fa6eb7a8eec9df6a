"""Exact JSON for the Python values a graph holds in attributes, metadata and encoding fields.

JSON has lists, str-keyed dicts, str, int, float, bool and null; everything else
is a one-key object whose key starts with "$":

  {"$t": [...]}              tuple (attributes compare tuples and lists as different)
  {"$f": "nan"|"inf"|"-inf"} non-finite float
  {"$d": [[key, value], ...]} dict whose keys are not all plain strings
  {"$n": [dtype, value]}     numpy scalar
  {"$a": [dtype, shape, b64]} numpy array (little-endian bytes, base64)
  {"$b": b64}                bytes
  {"$r": index}              ValueRef (an opaque torch node's argument placeholder)
  {"$torch": "float32"}      torch dtype, memory format or layout (an attribute of the torch module)
  {"$dev": "cpu"}            torch device
  {"$onnx": b64}             an ONNX GraphProto (an opaque ONNX node's subgraph attribute)

Floats are written with Python's shortest round-trip repr, so they read back bit for bit.
Anything else is refused with an error naming where it was found.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from graphopt.errors import StorageError
from graphopt.storage.bits import array_from_le_bytes, array_to_le_bytes


def to_json(value: Any, where: str) -> Any:
    """`value` as JSON-ready data; StorageError naming `where` for a value the format cannot hold."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, np.ndarray):
        dtype = value.dtype.name
        return {"$a": [dtype, list(value.shape), _b64(array_to_le_bytes(_plain_array(value, where)).tobytes())]}
    if isinstance(value, np.generic):
        return {"$n": [value.dtype.name, to_json(value.item(), where)]}
    if isinstance(value, tuple):
        return {"$t": [to_json(v, where) for v in value]}
    if isinstance(value, list):
        return [to_json(v, where) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: to_json(v, f"{where}.{k}") for k, v in value.items()}
        return {"$d": [[to_json(k, where), to_json(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"$b": _b64(value)}
    return _special(value, where)


def _special(value: Any, where: str) -> Any:
    from graphopt.ir.ops import ValueRef

    if isinstance(value, ValueRef):
        return {"$r": value.index}
    kind = type(value).__module__.split(".")[0]
    if kind == "torch":
        import torch

        if isinstance(value, torch.device):
            return {"$dev": str(value)}
        if isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
            return {"$torch": str(value).removeprefix("torch.")}
    if kind == "onnx":
        import onnx

        if isinstance(value, onnx.GraphProto):
            return {"$onnx": _b64(value.SerializeToString())}
    raise StorageError(f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored")


def _plain_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biufV" or array.dtype.kind == "V" and array.dtype.names:
        raise StorageError(f"{where}: arrays of dtype {array.dtype} cannot be stored")
    return array


def from_json(data: Any, where: str) -> Any:
    """Inverse of `to_json`; StorageError naming `where` for malformed data."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if isinstance(data, list):
        return [from_json(v, where) for v in data]
    if not isinstance(data, dict):
        raise StorageError(f"{where}: unexpected JSON value {data!r}")
    if len(data) == 1:
        ((key, body),) = data.items()
        if key.startswith("$"):
            try:
                return _tagged(key, body, where)
            except StorageError:
                raise
            except Exception as e:
                raise StorageError(f"{where}: malformed {key} value ({type(e).__name__}: {e})") from None
    return {k: from_json(v, f"{where}.{k}") for k, v in data.items()}


def _tagged(key: str, body: Any, where: str) -> Any:
    if key == "$t":
        return tuple(from_json(v, where) for v in body)
    if key == "$f":
        if body not in ("nan", "inf", "-inf"):
            raise ValueError(body)
        return float(body)
    if key == "$d":
        return {_hashable(from_json(k, where)): from_json(v, where) for k, v in body}
    if key == "$n":
        return dtype_named(body[0], where).type(from_json(body[1], where))
    if key == "$a":
        dtype, shape, text = body
        dtype = dtype_named(dtype, where)
        raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
        return array_from_le_bytes(raw.reshape(-1, dtype.itemsize), dtype, tuple(shape)).copy()
    if key == "$b":
        return base64.b64decode(body, validate=True)
    if key == "$r":
        from graphopt.ir.ops import ValueRef

        return ValueRef(int(body))
    if key == "$dev":
        import torch

        return torch.device(body)
    if key == "$torch":
        import torch

        value = getattr(torch, body)
        if not isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
            raise ValueError(f"torch.{body} is not a dtype, memory format or layout")
        return value
    if key == "$onnx":
        import onnx

        graph = onnx.GraphProto()
        graph.ParseFromString(base64.b64decode(body, validate=True))
        return graph
    raise StorageError(f"{where}: unknown tag {key} (written by a newer graphopt?)")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def dtype_named(name: str, where: str) -> np.dtype:
    """The numpy dtype called `name` (ml_dtypes' included); only numeric and bool dtypes."""
    from graphopt.ir.types import DTYPES, numpy_dtype

    try:
        dtype = numpy_dtype(name) if name in DTYPES else np.dtype(name)
    except TypeError:
        raise StorageError(f"{where}: unknown dtype {name!r}") from None
    if dtype.kind not in "biufV" or dtype.itemsize not in (1, 2, 4, 8) or (dtype.kind == "V" and name not in DTYPES):
        raise StorageError(f"{where}: dtype {name!r} cannot be stored")
    return dtype


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
