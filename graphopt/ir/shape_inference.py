"""Output types of canonical ops, found by running each op's torch reference on meta tensors.

One definition of every op (its `impl` in `graphopt.ir.ops`) gives both its numerics
and its shape rule, so the two cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from graphopt.errors import VerificationError
from graphopt.ir.ops import get_op
from graphopt.ir.types import TensorType, dtype_from_torch, torch_dtype

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node


def _meta_input(graph: "Graph", name: str) -> torch.Tensor | None:
    if graph.is_param(name):
        # Parameter contents matter for some ops (none today); shapes come from the data.
        data = graph.params[name].data
        if data.dtype.name not in ("float32", "float16", "float64", "int8", "uint8", "int16",
                                   "int32", "int64", "bool"):
            return None
        return torch.empty(data.shape, dtype=torch_dtype(data.dtype.name), device="meta")
    t = graph.value(name).type
    if t is None or not t.is_static:
        return None
    return torch.empty(t.shape, dtype=torch_dtype(t.dtype), device="meta")


def infer_output_types(graph: "Graph", node: "Node") -> list[TensorType | None]:
    """Types of `node`'s outputs; [None, ...] when an input type is unknown or symbolic.

    Raises VerificationError naming the node when the op rejects its input shapes
    (e.g. a conv weight whose in-channels do not match its input).
    """
    opdef = get_op(node.op)
    args = [_meta_input(graph, v) for v in node.inputs]
    if any(a is None for a in args):
        return [None] * len(node.outputs)
    try:
        out = opdef.impl(*args, **node.attrs)
    except Exception as e:  # the op's own message says which shapes disagree
        shapes = ", ".join(f"{v}: {graph.values[v].type}" for v in node.inputs)
        raise VerificationError(f"{node.op}({shapes}) is invalid: {e}", node=node.name) from None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [TensorType(tuple(o.shape), dtype_from_torch(o.dtype)) for o in outs]
