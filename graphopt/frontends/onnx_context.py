"""What an ONNX -> canonical rule sees of one node: `NodeContext`, and typing with symbolic dims.

A rule reads the node through its context and adds canonical nodes with
`cx.emit`; the last one defines the ONNX node's outputs (`final=True`).
Everything a rule adds is recorded so `rollback` can undo it when the rule
gives up (the node then stays opaque).

Output types: a final output takes the type ONNX shape inference gave it, merged
with the type the canonical op derives (which must agree, or the rule is
rejected: a cheap check that every rule means what the ONNX op means). Inner
nodes of a multi-node rule get derived types; symbolic dimensions are tracked
by running the op's reference on two different sets of stand-in sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch

from graphopt.errors import FrontendError
from graphopt.ir.graph import Graph
from graphopt.ir.ops import get_op
from graphopt.ir.types import DTYPE_ABBREV, Dim, TensorType, dtype_from_torch, torch_dtype

__all__ = ["NodeContext", "Unmappable", "InvalidNode", "dtype_name", "infer_types", "merge_types", "INT64_MAX"]

INT64_MAX = 2**63 - 1


def dtype_name(elem_type: int) -> str | None:
    """The IR dtype name of an ONNX element type; None if the IR has no such dtype."""
    try:
        name = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:
        return None
    return name if name in DTYPE_ABBREV else None


class Unmappable(Exception):
    """This node's form has no exact canonical equivalent; it stays opaque."""


class InvalidNode(FrontendError):
    """This node breaks its op's definition (no runtime can run it); the import fails, naming it."""


# --- types with symbolic dimensions --------------------------------------------------

_PROBES = (7919, 10007)  # stand-in sizes for symbolic dims: symbol k -> base + 2k, per probe


def _meta(t: TensorType | None, sizes: dict[str, int]) -> torch.Tensor | None:
    if t is None:
        return None
    return torch.empty(
        [sizes[d] if isinstance(d, str) else d for d in t.shape], dtype=torch_dtype(t.dtype), device="meta"
    )


def infer_types(
    graph: Graph, op: str, inputs: Sequence[str], attrs: dict[str, Any], out_names: Sequence[str]
) -> list[TensorType]:
    """Output types of `op(inputs)`, symbolic dims included; raises Unmappable if the op rejects them."""
    in_types = [graph.values[v].type for v in inputs]
    if any(t is None for t in in_types):
        raise Unmappable(f"{op}: an input type is unknown")
    symbols = sorted({d for t in in_types for d in t.shape if isinstance(d, str)})
    probes = []
    for base in _PROBES if symbols else _PROBES[:1]:
        sizes = {s: base + 2 * k for k, s in enumerate(symbols)}
        try:
            out = get_op(op).impl(*[_meta(t, sizes) for t in in_types], **attrs)
        except Exception as e:  # the reference says which shapes disagree
            raise Unmappable(f"{op} rejects inputs {[str(t) for t in in_types]}: {e}") from None
        probes.append((sizes, out if isinstance(out, (tuple, list)) else (out,)))
    types = []
    for j, name in enumerate(out_names):
        sizes0, outs0 = probes[0]
        dims: list[Dim] = []
        for axis, d in enumerate(outs0[j].shape):
            others = [p[1][j].shape[axis] for p in probes[1:]]
            if all(o == d for o in others):
                dims.append(int(d))
                continue
            match = [s for s in symbols if all(p[1][j].shape[axis] == p[0][s] for p in probes)]
            dims.append(match[0] if match else f"{name}_dim{axis}")
        types.append(TensorType(tuple(dims), dtype_from_torch(outs0[j].dtype)))
    return types


def merge_types(derived: TensorType, onnx_t: TensorType | None, name: str, where: str) -> TensorType:
    """`derived` refined by ONNX's type: the two must agree on dtype, rank and static dims.

    Per dim: a static size wins, then a symbol the derivation traced to an input
    symbol (ONNX often answers 'unk__3' there), then ONNX's name.
    """
    if onnx_t is None:
        return derived
    if (
        onnx_t.dtype != derived.dtype
        or onnx_t.rank != derived.rank
        or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(derived.shape, onnx_t.shape))
    ):
        raise Unmappable(f"{where}: canonical form gives {derived}, ONNX infers {onnx_t}")
    dims = [
        a if isinstance(a, int) or (a != f"{name}_dim{axis}" and not isinstance(b, int)) else b
        for axis, (a, b) in enumerate(zip(derived.shape, onnx_t.shape))
    ]
    return TensorType(tuple(dims), derived.dtype)


# --- per-node context ------------------------------------------------------------------


class NodeContext:
    """What a rule sees of one ONNX node, and how it adds canonical nodes and parameters."""

    def __init__(
        self, graph: Graph, node: gs.Node, *, opset: int, onnx_types: dict, graph_outputs: set[str], reserved: set[str]
    ):
        self.graph, self.node, self.opset = graph, node, opset
        self.op_type = node.op
        self.ins = [t.name for t in node.inputs]  # "" marks an omitted optional input
        self.outs = [t.name for t in node.outputs]
        self.name = node.name or next((o for o in self.outs if o), node.op)
        self._onnx_types = onnx_types
        self._graph_outputs = graph_outputs
        self._reserved = reserved
        self._undo: list[tuple[str, Any]] = []

    # ---- reading the node ----
    def attr(self, key: str, default: Any = None) -> Any:
        v = self.node.attrs.get(key, default)
        return v.values if isinstance(v, gs.Constant) else v

    def has(self, i: int) -> bool:
        return i < len(self.ins) and self.ins[i] != ""

    def const(self, i: int) -> np.ndarray | None:
        """Data of input `i` if it is a parameter (initializer or Constant), else None."""
        if self.has(i) and self.graph.is_param(self.ins[i]):
            return self.graph.params[self.ins[i]].data
        return None

    def const_ints(self, i: int) -> list[int] | None:
        data = self.const(i)
        return None if data is None else [int(v) for v in data.reshape(-1)]

    def type(self, i: int) -> TensorType | None:
        return self.graph.values[self.ins[i]].type if self.has(i) else None

    def rank(self, i: int) -> int | None:
        t = self.type(i)
        return None if t is None else t.rank

    def used(self, j: int) -> bool:
        """Whether output `j` is read by a node or is a graph output."""
        if j >= len(self.outs) or not self.outs[j]:
            return False
        return bool(self.node.outputs[j].outputs) or self.outs[j] in self._graph_outputs

    def invalid(self, message: str) -> InvalidNode:
        label = f"node '{self.node.name}'" if self.node.name else f"node defining '{self.name}'"
        return InvalidNode(f"{label} ({self.op_type}): {message}")

    def only_first_output_used(self) -> bool:
        return not any(self.used(j) for j in range(1, len(self.outs)))

    # ---- building ----
    def fresh(self, base: str) -> str:
        name = self.graph.unique_name(base)
        k = 1
        while name in self._reserved:
            name = self.graph.unique_name(f"{base}_{k}")
            k += 1
        return name

    def emit(self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None, *, final: bool = False) -> str:
        """Add canonical `op(inputs)`; final=True makes it define this ONNX node's outputs."""
        attrs = get_op(op).with_defaults(attrs or {})
        count = get_op(op).output_count(attrs)
        if final:
            outs = self.outs[:count]
            if len(outs) != count or not all(outs):
                raise Unmappable(f"{op} defines {count} outputs, the ONNX node {len(self.outs)}")
            name = self.graph.unique_name(self.name)  # may equal its own output's name
        else:
            name = self.fresh(f"{self.name}/{op}")
            outs = [name] if count == 1 else [self.fresh(f"{name}_{k}") for k in range(count)]
        types = infer_types(self.graph, op, inputs, attrs, outs)
        if final:
            types = [merge_types(t, self._onnx_types.get(o), o, f"{self.op_type} -> {op}") for t, o in zip(types, outs)]
        node = self.graph.add_node(
            op,
            inputs,
            attrs=attrs,
            name=name,
            outputs=outs,
            output_types=types,
            meta={"onnx_node": self.node.name, "onnx_op": self.op_type},
        )
        self._undo.append(("node", node))
        return outs[0]

    def add_param(self, base: str, data: np.ndarray, *, trainable: bool = False) -> str:
        name = self.graph.add_param(self.fresh(base), np.asarray(data), trainable=trainable, unique=False)
        self._undo.append(("param", name))
        return name

    def scalar(self, value: float, like: str) -> str:
        """A frozen scalar parameter with the dtype of value `like`."""
        dtype = self.graph.values[like].type.dtype if self.graph.values[like].type else "float32"
        return self.add_param(f"{self.name}/const", np.array(value, dtype=dtype))

    def transposed(self, i: int) -> str:
        """Input `i` (a 2-D parameter) transposed: in place if this node is its only reader."""
        name = self.ins[i]
        p = self.graph.params[name]
        sole = len(self.node.inputs[i].outputs) == 1 and name not in self._graph_outputs
        if sole:
            self._undo.append(("data", (name, p.data)))
            self.graph.set_param(name, p.data.T.copy())  # keeps trainable
            return name
        return self.add_param(f"{name}_t", p.data.T.copy(), trainable=p.trainable)

    def freeze(self, *idx: int) -> None:
        """Mark parameter inputs as statistics/constants rather than trainable weights."""
        for i in idx:
            if self.has(i) and self.graph.is_param(self.ins[i]):
                name = self.ins[i]
                self._undo.append(("trainable", (name, self.graph.params[name].trainable)))
                self.graph.set_trainable(name, False)

    def rollback(self) -> None:
        for kind, item in reversed(self._undo):
            if kind == "node":
                self.graph.remove_node(item)
            elif kind == "param":
                self.graph.remove_param(item)
            elif kind == "trainable":
                self.graph.set_trainable(*item)
            else:
                name, data = item
                self.graph.set_param(name, data)
        self._undo.clear()
