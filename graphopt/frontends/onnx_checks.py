"""Checks on a raw ONNX model that must hold before anything reads its tensors or runs its ops.

- `check_tensor_sizes`: a stored tensor holds exactly the data its dims declare.
  Runs on the protobuf fields alone, so a tensor declaring 2^40 elements with 16
  bytes of data is refused without allocating anything.
- `check_node_ops`: every node of a standard domain (ai.onnx, ai.onnx.ml, ...) is an
  operator that domain defines at the version the model imports; a node of an
  older or a made-up opset is refused by name rather than imported with another
  version's meaning.

Each failure is a `FrontendError` naming the model and the tensor or node at fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import onnx
from onnx import TensorProto

from graphopt.errors import FrontendError

__all__ = ["check_tensor_sizes", "check_node_ops", "STANDARD_DOMAINS"]

STANDARD_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training")

# element types narrower than a byte: bits per element (raw_data packs them)
_SUB_BYTE_BITS = {
    TensorProto.INT4: 4,
    TensorProto.UINT4: 4,
    **{
        getattr(TensorProto, n): b for n, b in (("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(TensorProto, n)
    },
    **{getattr(TensorProto, n): 6 for n in ("FLOAT6E2M3", "FLOAT6E3M2") if hasattr(TensorProto, n)},
}
_COMPLEX = (TensorProto.COMPLEX64, TensorProto.COMPLEX128)


def _itembits(data_type: int) -> int | None:
    if data_type in _SUB_BYTE_BITS:
        return _SUB_BYTE_BITS[data_type]
    try:
        return 8 * onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:
        return None


def tensor_size_problem(t: TensorProto) -> str | None:
    """Why `t`'s stored data does not match its dims, or None when it does (or cannot be told)."""
    if t.data_location == TensorProto.EXTERNAL or t.HasField("segment"):
        return None  # external data is checked once it is read in
    count = math.prod(t.dims)
    dims = list(t.dims)
    type_name = TensorProto.DataType.Name(t.data_type)
    if t.HasField("raw_data"):
        if t.data_type == TensorProto.STRING:
            return "is a STRING tensor with raw_data, which ONNX does not allow"
        bits = _itembits(t.data_type)
        if bits is None:
            return None
        want = (count * bits + 7) // 8
        have = len(t.raw_data)
        if have != want:
            return (
                f"declares dims {dims} ({count:,} {type_name} elements, {want:,} bytes) "
                f"but holds {have:,} bytes of raw_data"
            )
        return None
    field = onnx.helper.tensor_dtype_to_field(t.data_type)
    have = len(getattr(t, field))
    if t.data_type in _SUB_BYTE_BITS:  # packed several to an entry
        want = (count * _SUB_BYTE_BITS[t.data_type] + 7) // 8 if have else count
        if have == 0 and count or have > want:
            return f"declares dims {dims} ({count:,} {type_name} elements) but holds {have:,} {field} entries"
        return None
    want = count * (2 if t.data_type in _COMPLEX else 1)
    if have != want:
        if have == 0:
            return f"declares dims {dims} ({count:,} {type_name} elements) but holds no data"
        return f"declares dims {dims} ({count:,} {type_name} elements) but holds {have:,} values in {field}"
    return None


def check_tensor_sizes(tensors: Iterable[tuple[TensorProto, str]], src: str) -> None:
    """Refuse the first labelled tensor whose data does not match its dims."""
    for t, label in tensors:
        problem = tensor_size_problem(t)
        if problem is not None:
            raise FrontendError(f"{src}: {label} {problem}")


def check_node_ops(
    model: onnx.ModelProto,
    graphs: Iterable[onnx.GraphProto],
    label: Callable[[onnx.NodeProto, int], str],
    src: str,
) -> None:
    """Every standard-domain node names an operator its imported opset defines."""
    opsets = {("" if d.domain == "ai.onnx" else d.domain): d.version for d in model.opset_import}
    local = {(f.domain, f.name) for f in model.functions}
    for g in graphs:
        for k, n in enumerate(g.node):
            domain = "" if n.domain == "ai.onnx" else n.domain
            if domain not in STANDARD_DOMAINS or (n.domain, n.op_type) in local:
                continue
            shown = domain or "ai.onnx"
            version = opsets.get(domain)
            if version is None:
                raise FrontendError(f"{src}: {label(n, k)} is in domain '{shown}', which the model does not import")
            if not onnx.defs.has(n.op_type, domain):
                raise FrontendError(f"{src}: {label(n, k)}: '{n.op_type}' is not an operator of domain '{shown}'")
            try:
                onnx.defs.get_schema(n.op_type, version, domain)
            except onnx.defs.SchemaError:
                since = onnx.defs.get_all_schemas_with_history()
                first = min(s.since_version for s in since if s.name == n.op_type and s.domain == domain)
                raise FrontendError(
                    f"{src}: {label(n, k)}: '{n.op_type}' is not defined in {shown} opset {version} "
                    f"(it first appears in opset {first})"
                ) from None
