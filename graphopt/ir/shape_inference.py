"""Output types of ops, found by running each op's torch reference on meta tensors.

One definition of every op (its `impl` in `graphopt.ir.ops`) gives both its numerics
and its shape rule, so the two cannot disagree. Opaque torch nodes are inferred
the same way through their ATen op; opaque ONNX nodes are not inferred here.

Symbolic dims (a str in a shape, e.g. a batch "N") are inferred by probing: the op
runs twice, each symbol standing for a different odd size per run; an output dim
equal in both runs is static, one that follows a symbol in both runs is that
symbol, and any other (e.g. N*64 after flattening the batch into features) makes
that output's type unknown (None), never a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from graphopt.errors import VerificationError
from graphopt.ir.ops import get_op
from graphopt.ir.types import TensorType, dtype_from_torch, torch_dtype

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node


_PROBES = (7919, 10007)  # stand-in sizes for symbolic dims: symbol k -> base + 2k, one run per base


def _meta(t: TensorType | None, sizes: dict[str, int] | None = None) -> torch.Tensor | None:
    """A meta tensor of type `t`, symbols at `sizes`; None when the type is unknown or a symbol has no size."""
    if t is None or (
        not t.is_static and (sizes is None or any(isinstance(d, str) and d not in sizes for d in t.shape))
    ):
        return None
    dims = [sizes[d] if isinstance(d, str) else d for d in t.shape]
    return torch.empty(dims, dtype=torch_dtype(t.dtype), device="meta")


def _types(node: "Node", out, logical: str | None) -> list[TensorType]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [TensorType(tuple(o.shape), logical or dtype_from_torch(o.dtype)) for o in outs]


def _probed(in_types, run) -> list[TensorType | None]:
    """Output types of `run(meta_args)` over inputs with symbolic dims (see the module docstring)."""
    symbols = sorted({d for t in in_types for d in t.shape if isinstance(d, str)})
    runs = []
    for base in _PROBES:
        sizes = {sym: base + 2 * k for k, sym in enumerate(symbols)}
        runs.append((sizes, run([_meta(t, sizes) for t in in_types])))
    first, others = runs[0][1], runs[1:]
    types: list[TensorType | None] = []
    for j, t0 in enumerate(first):
        dims = []
        for axis, d in enumerate(t0.shape):
            if all(o[j].shape[axis] == d for _, o in others):
                dims.append(d)
                continue
            match = [s for s in symbols if all(o[j].shape[axis] == sz[s] for sz, o in runs)]
            if not match:
                dims = None
                break
            dims.append(match[0])
        types.append(None if dims is None else TensorType(tuple(dims), t0.dtype))
    return types


# Output types are a function of (op, attributes, input types): memoized, since big
# graphs repeat a few signatures thousands of times (every layer of a transformer).
_MEMO: dict[tuple, list[TensorType]] = {}
_MEMO_LIMIT = 100_000


def infer_output_types(graph: "Graph", node: "Node") -> list[TensorType | None]:
    """Types of a canonical node's outputs; [None, ...] when an input type is unknown (symbols: see above).

    Raises VerificationError naming the node when the op rejects its input shapes
    (e.g. a conv weight whose in-channels do not match its input).
    """
    in_types = tuple(graph.value(v).type for v in node.inputs)
    if any(t is None for t in in_types):
        return [None] * len(node.outputs)
    key = (node.op, repr(sorted(node.attrs.items())), in_types)
    hit = _MEMO.get(key)
    if hit is not None:
        return list(hit)
    opdef = get_op(node.op)
    logical = opdef.out_dtype(node.attrs) if opdef.out_dtype else None

    def run(args):
        try:
            return _types(node, opdef.impl(*args, **node.attrs), logical)
        except Exception as e:  # the op's own message says which shapes disagree
            shapes = ", ".join(f"{v}: {graph.values[v].type}" for v in node.inputs)
            raise VerificationError(f"{node.op}({shapes}) is invalid: {e}", node=node.name) from None

    static = all(t.is_static for t in in_types)
    types = run([_meta(t) for t in in_types]) if static else _probed(in_types, run)
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

    in_types = [graph.value(v).type for v in node.inputs]
    if any(t is None for t in in_types):
        return [None] * len(node.outputs)

    def run(args):
        fn = resolve_op(node.attrs["target"], node.name)
        out = fn(*fill_template(node.attrs.get("args", ()), args), **fill_template(node.attrs.get("kwargs", {}), args))
        return _types(node, out, None)

    try:
        types = run([_meta(t) for t in in_types]) if all(t.is_static for t in in_types) else _probed(in_types, run)
    except Exception:
        return [None] * len(node.outputs)
    return types if len(types) == len(node.outputs) else [None] * len(node.outputs)
