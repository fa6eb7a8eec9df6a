"""Output types of ops, found by running each op's torch reference on meta tensors.

One definition of every op (its `impl` in `graphopt.ir.ops`) gives both its numerics
and its shape rule, so the two cannot disagree. Opaque torch nodes are inferred
the same way through their ATen op; opaque ONNX nodes are not inferred here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from graphopt.errors import VerificationError
from graphopt.ir.ops import get_op
from graphopt.ir.types import TensorType, dtype_from_torch, torch_dtype

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node


def _meta(t: TensorType | None) -> torch.Tensor | None:
    """A meta tensor of type `t`; None when the type is unknown or symbolic."""
    if t is None or not t.is_static:
        return None
    return torch.empty(t.shape, dtype=torch_dtype(t.dtype), device="meta")


def _types(node: "Node", out, logical: str | None) -> list[TensorType]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [TensorType(tuple(o.shape), logical or dtype_from_torch(o.dtype)) for o in outs]


# Output types are a function of (op, attributes, input types): memoized, since big
# graphs repeat a few signatures thousands of times (every layer of a transformer).
_MEMO: dict[tuple, list[TensorType]] = {}
_MEMO_LIMIT = 100_000


def infer_output_types(graph: "Graph", node: "Node") -> list[TensorType | None]:
    """Types of a canonical node's outputs; [None, ...] when an input type is unknown or symbolic.

    Raises VerificationError naming the node when the op rejects its input shapes
    (e.g. a conv weight whose in-channels do not match its input).
    """
    in_types = tuple(graph.value(v).type for v in node.inputs)
    if any(t is None or not t.is_static for t in in_types):
        return [None] * len(node.outputs)
    key = (node.op, repr(sorted(node.attrs.items())), in_types)
    hit = _MEMO.get(key)
    if hit is not None:
        return list(hit)
    opdef = get_op(node.op)
    args = [_meta(t) for t in in_types]
    try:
        out = opdef.impl(*args, **node.attrs)
    except Exception as e:  # the op's own message says which shapes disagree
        shapes = ", ".join(f"{v}: {graph.values[v].type}" for v in node.inputs)
        raise VerificationError(f"{node.op}({shapes}) is invalid: {e}", node=node.name) from None
    types = _types(node, out, opdef.out_dtype(node.attrs) if opdef.out_dtype else None)
    if len(_MEMO) >= _MEMO_LIMIT:
        _MEMO.clear()
    _MEMO[key] = types
    return list(types)


def infer_node_types(graph: "Graph", node: "Node") -> list[TensorType | None]:
    """Like `infer_output_types`, for any node: opaque torch nodes run their ATen op on
    meta tensors; opaque ONNX nodes (and ATen ops without meta kernels) give None."""
    if not node.is_opaque:
        return infer_output_types(graph, node)
    if node.attrs.get("framework") != "torch":
        return [None] * len(node.outputs)
    from graphopt.emit.torch import fill_template, resolve_op

    args = [_meta(graph.value(v).type) for v in node.inputs]
    if any(a is None for a in args):
        return [None] * len(node.outputs)
    try:
        fn = resolve_op(node.attrs["target"], node.name)
        out = fn(*fill_template(node.attrs.get("args", ()), args), **fill_template(node.attrs.get("kwargs", {}), args))
        types = _types(node, out, None)
    except Exception:
        return [None] * len(node.outputs)
    return types if len(types) == len(node.outputs) else [None] * len(node.outputs)
