"""Seeded example inputs for a graph, from its input types, chosen from the model's domain.

Float inputs are standard normal, except an input read directly by log, sqrt or
rsqrt (canonical, or the opaque torch / ONNX form), which gets |N(0, 1)| + 0.1 so
the reference is finite. Integer inputs feeding an embedding are drawn from
[0, rows) of the smallest table they index, other integers from [0, 2); an
integer input used directly as a divisor (div, or the opaque torch floor_divide,
remainder, fmod, div with rounding_mode, ONNX Div/Mod) is drawn from [1, 3) so
integer division never divides by zero. Symbolic dimensions are taken as 1.
An input of more than MAX_ELEMENTS elements is refused with a GraphoptError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.ops import ValueRef

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

MAX_ELEMENTS = 1 << 28  # per input: 1 GiB of float32, well past any model input that runs

_DIVIDE = {"div"}
_DIVIDE_TORCH = {"div", "divide", "true_divide", "floor_divide", "remainder", "fmod"}
_DIVIDE_ONNX = {"Div", "Mod"}
_POSITIVE = {"log", "sqrt", "rsqrt"}
_POSITIVE_TORCH = {"log", "log2", "log10", "sqrt", "rsqrt"}
_POSITIVE_ONNX = {"Log", "Sqrt"}


def _index_bound(graph: "Graph", name: str) -> int:
    bounds = [
        graph.type_of(n.inputs[1]).shape[0] for n in graph.users(name) if n.op == "embedding" and n.inputs[0] == name
    ]
    return int(min(bounds)) if bounds else 2


def _kind(node: "Node", canonical: set[str], torch_ops: set[str], onnx_ops: set[str]) -> bool:
    """`node` is one of these ops: canonical, opaque aten.<op>.<overload>, or an opaque ONNX op_type."""
    if not node.is_opaque:
        return node.op in canonical
    target = str(node.attrs.get("target") or "")
    if target.startswith("aten."):
        return target.split(".")[1] in torch_ops
    return node.attrs.get("op_type") in onnx_ops


def _operand(node: "Node", position: int) -> str | None:
    """The value at argument `position` (an opaque torch node's template says which input that is)."""
    if node.is_opaque and "args" in node.attrs:
        args = node.attrs["args"]
        ref = args[position] if position < len(args) else None
        return node.inputs[ref.index] if isinstance(ref, ValueRef) else None
    return node.inputs[position] if position < len(node.inputs) else None


def _is_divisor(graph: "Graph", name: str) -> bool:
    return any(_kind(n, _DIVIDE, _DIVIDE_TORCH, _DIVIDE_ONNX) and _operand(n, 1) == name for n in graph.users(name))


def _needs_positive(graph: "Graph", name: str) -> bool:
    return any(
        _kind(n, _POSITIVE, _POSITIVE_TORCH, _POSITIVE_ONNX) and _operand(n, 0) == name for n in graph.users(name)
    )


def sample_inputs(graph: "Graph", seed: int = 0) -> list[np.ndarray]:
    """One set of inputs, in `graph.inputs` order, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for name in graph.inputs:
        t = graph.type_of(name)
        shape = tuple(d if isinstance(d, int) else 1 for d in t.shape)
        size = int(np.prod(shape, dtype=object))
        if size > MAX_ELEMENTS:
            raise GraphoptError(
                f"graph input '{name}' has shape {list(t.shape)} ({size} elements): too "
                f"large to sample verification inputs for (limit {MAX_ELEMENTS} elements)"
            )
        if t.dtype.startswith("float") or t.dtype == "bfloat16":
            x = rng.standard_normal(shape)
            if _needs_positive(graph, name):
                x = np.abs(x) + 0.1
            out.append(x.astype("float32" if t.dtype == "bfloat16" else t.dtype))
        elif t.dtype == "bool":
            out.append(rng.integers(0, 2, shape).astype(bool))
        elif _is_divisor(graph, name):
            out.append(rng.integers(1, 3, shape).astype(t.dtype))
        else:
            out.append(rng.integers(0, _index_bound(graph, name), shape).astype(t.dtype))
    return out
