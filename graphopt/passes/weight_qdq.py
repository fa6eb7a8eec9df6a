"""Quantized weights in Q/DQ form, as the post-training methods read and write them.

A quantized weight is an integer parameter `q` feeding `dequantize(q, scale, zero_point)`
whose output is input 1 (the weight) of a conv or linear: what `quantize` and
`quantize-weights` produce. `quantized_weights(graph)` lists them in graph
order; `dequantized` gives their float values; `integer_range` infers the
range the integers may take (a signed type with zero points 0 whose data never
reaches its most negative value is the narrow symmetric range, e.g. int8
[-127, 127], as `quantize` writes it); `round_to_grid` quantizes float values onto
a weight's grid. `float_reference` finds the float weight of the same layer in
the graph before quantization (`PassContext.reference`): layers keep their node
names through `quantize`, so they are matched by name. The `FloatReference`
instrument sets that reference inside one pipeline: it keeps a copy of the
graph right before the first quantizing pass, so
`equalize-cross-layer,quantize,round-adaptive,correct-bias` runs in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.ir.types import dtype_from_numpy, dtype_info, numpy_dtype
from graphopt.passes.instruments import Instrument

__all__ = [
    "QuantizedWeight",
    "quantized_weights",
    "expand",
    "dequantized",
    "round_to_grid",
    "integer_range",
    "float_reference",
    "is_float_value",
    "FloatReference",
]

LAYERS = ("conv", "linear")


@dataclass(frozen=True)
class QuantizedWeight:
    node: str  # the conv/linear reading the dequantized weight
    op: str
    dequantize: str  # the dequantize node
    q: str  # the integer parameter
    scale: str
    zero_point: str
    axis: int | None
    block_size: int | None
    dtype: str
    qmin: int
    qmax: int

    @property
    def bits(self) -> int:
        return dtype_info(self.dtype).bits


def quantized_weights(graph: Graph, ops: tuple[str, ...] = LAYERS) -> list[QuantizedWeight]:
    """Every conv/linear whose weight is `dequantize(integer parameter, scale parameter, zero-point parameter)`."""
    found = []
    for node in graph.nodes:
        if node.op not in ops or len(node.inputs) < 2:
            continue
        dq = graph.producer(node.inputs[1])
        if dq is None or dq.op != "dequantize" or not all(graph.is_param(v) for v in dq.inputs):
            continue
        q, scale, zero = dq.inputs
        dtype = dtype_from_numpy(graph.param(q).data.dtype)
        if dtype_info(dtype).kind not in ("int", "uint") or dtype_info(dtype).bits > 8:
            continue
        qmin, qmax = integer_range(dtype, graph.param(q).data, graph.param(zero).data)
        axis, block = dq.attrs["axis"], dq.attrs["block_size"]
        found.append(QuantizedWeight(node.name, node.op, dq.name, q, scale, zero, axis, block, dtype, qmin, qmax))
    return found


def integer_range(dtype: str, data: np.ndarray, zero_point: np.ndarray) -> tuple[int, int]:
    """The integers a weight may take: narrow symmetric for signed data centred on 0 that avoids the minimum."""
    info = dtype_info(dtype)
    if info.kind == "uint":
        return 0, 2**info.bits - 1
    lo, hi = -(2 ** (info.bits - 1)), 2 ** (info.bits - 1) - 1
    values = np.asarray(data).astype(np.int64)
    if not np.any(np.asarray(zero_point).astype(np.int64)) and (values.size == 0 or values.min() > lo):
        lo = -hi
    return lo, hi


def expand(t: np.ndarray, shape: tuple[int, ...], axis: int | None, block_size: int | None) -> np.ndarray:
    """A scale or zero point broadcast to a weight of `shape` (per tensor, per channel along `axis`, or blocked)."""
    t = np.asarray(t)
    if axis is None or t.ndim == 0:
        return np.broadcast_to(t, shape)
    axis = axis % len(shape)
    if block_size:
        return np.repeat(t, block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(t.reshape(view), shape)


def dequantized(graph: Graph, qw: QuantizedWeight) -> np.ndarray:
    """(q - zero_point) * scale as float32 (what the dequantize node computes)."""
    q = graph.param(qw.q).data.astype(np.float32)
    s = expand(graph.param(qw.scale).data.astype(np.float32), q.shape, qw.axis, qw.block_size)
    z = expand(graph.param(qw.zero_point).data.astype(np.float32), q.shape, qw.axis, qw.block_size)
    return ((q - z) * s).astype(np.float32)


def round_to_grid(graph: Graph, qw: QuantizedWeight, w: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """`w` on the weight's integer grid, in its dtype: nearest, or floor + `up` (0/1 per entry) when given."""
    shape = graph.param(qw.q).data.shape
    s = expand(graph.param(qw.scale).data.astype(np.float64), shape, qw.axis, qw.block_size)
    z = expand(graph.param(qw.zero_point).data.astype(np.float64), shape, qw.axis, qw.block_size)
    x = np.asarray(w, np.float64) / s
    q = np.round(x) if up is None else np.floor(x) + up
    return np.clip(q + z, qw.qmin, qw.qmax).astype(numpy_dtype(qw.dtype))


def float_reference(reference: Graph | None, graph: Graph, qw: QuantizedWeight, pass_name: str) -> np.ndarray:
    """The float weight of layer `qw.node` in `reference` (the graph before quantization)."""
    if reference is None:
        raise PassError(
            f"{pass_name}: needs the float graph the quantized graph came from; pass it as "
            f"PassContext(reference=float_graph)"
        )
    if not reference.has_node(qw.node) or reference.node(qw.node).op != qw.op:
        raise PassError(
            f"{pass_name}: {qw.op} '{qw.node}' of graph '{graph.name}' has no {qw.op} of that name in the reference "
            f"graph '{reference.name}' (give the float graph right before quantization)"
        )
    w = reference.node(qw.node).inputs[1]
    if not reference.is_param(w) or not is_float_value(reference, w):
        raise PassError(f"{pass_name}: the weight of '{qw.node}' in the reference graph is not a float parameter")
    data = reference.param(w).data
    if data.shape != graph.param(qw.q).data.shape:
        raise PassError(
            f"{pass_name}: the weight of '{qw.node}' is {list(data.shape)} in the reference graph and "
            f"{list(graph.param(qw.q).data.shape)} in the quantized graph"
        )
    return data.astype(np.float32)


def is_float_value(graph: Graph, value: str) -> bool:
    t = graph.value(value).type
    return t is not None and t.dtype in ("float32", "float64", "float16", "bfloat16")


class FloatReference(Instrument):
    """Sets `ctx.reference` to a copy of the graph right before the first quantizing pass (unless one is given)."""

    QUANTIZING = ("quantize", "quantize-weights", "mixed-precision")

    def before_pass(self, pass_, graph, ctx) -> None:
        if ctx.reference is None and pass_.name in self.QUANTIZING:
            ctx.reference = graph.copy()
