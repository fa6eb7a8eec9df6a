"""What `convert-fp16` and `convert-bf16` share: float32 compute and weights to a 16-bit float.

Every node computes in the half dtype except the float32 islands
(`FLOAT32_OPS`): ops whose range or accumulation needs float32 (softmax,
normalisations, reductions, exp/log/pow and friends), quantize/dequantize
(their scales are float32 by definition), `cast` (its dtype is its meaning) and
opaque nodes (their original form fixes their types). Only float32 values
change; integers, bools and float64 are left alone.

- A float32 parameter read only by half nodes becomes a half parameter (values
  beyond the half range saturate to +-inf, counted as `overflowed`); one read by
  an island too stays float32 and its half readers read a cast of it.
- Where a value crosses between a half node and an island, one `cast` per value
  and direction is inserted.
- The interface keeps its dtypes and names: a float32 graph input is cast where
  half nodes read it, and a graph output computed in half is cast back to
  float32 under its own name (its producer is re-created with a new output).

Running the pass again finds every float32 value already at an island or an
interface edge and changes nothing.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import numpy_dtype

FLOAT32_OPS = frozenset(
    {
        "softmax", "layer_norm", "batch_norm",  # normalisations: sums of squares, exp
        "mean", "sum",  # reductions accumulate in float32
        "exp", "log", "pow", "sqrt", "rsqrt", "reciprocal", "erf",  # range: overflow, underflow
        "quantize", "dequantize",  # float32 scales
        "cast",  # produces the dtype it names
        "opaque",
    }
)  # fmt: skip

_CONVERTIBLE = "float32"


def _is_island(node: Node) -> bool:
    return node.is_opaque or node.op in FLOAT32_OPS


class _Plan:
    """The dtype every value will have after the pass, decided before any edit."""

    def __init__(self, graph: Graph, half: str):
        self.graph, self.half = graph, half
        self.dtype: dict[str, str] = {}
        for name in graph.inputs:
            self.dtype[name] = graph.type_of(name).dtype
        for name, p in graph.params.items():
            readers = graph.users(name)
            to_half = p.data.dtype == np.float32 and readers and not any(_is_island(n) for n in readers)
            self.dtype[name] = half if to_half else p.data.dtype.name
        for node in graph.nodes:
            for out in node.outputs:
                t = graph.type_of(out).dtype
                self.dtype[out] = half if t == _CONVERTIBLE and not _is_island(node) else t

    def wanted(self, node: Node) -> str:
        return _CONVERTIBLE if _is_island(node) else self.half


def convert_to_half(graph: Graph, half: str) -> dict[str, int]:
    """Rewrite `graph` to compute in `half` ("float16" or "bfloat16") with float32 islands.

    Returns statistics: `params` converted, `casts` inserted, `overflowed` parameter
    elements that saturated to +-inf, `float32_nodes` kept in float32.
    """
    plan = _Plan(graph, half)
    stats = dict(params=0, casts=0, overflowed=0, float32_nodes=0)
    casts: dict[tuple[str, str], str] = {}

    def cast_of(value: str, dtype: str) -> str:
        key = (value, dtype)
        if key not in casts:
            casts[key] = graph.add_node("cast", [value], attrs=dict(dtype=dtype)).output
            stats["casts"] += 1
        return casts[key]

    for name in list(graph.params):
        if plan.dtype[name] == half:
            data = graph.param(name).data
            with np.errstate(over="ignore"):
                converted = data.astype(numpy_dtype(half))
            stats["overflowed"] += int(np.sum(np.isinf(converted.astype(np.float32)) & np.isfinite(data)))
            graph.set_param(name, converted)
            stats["params"] += 1
    for node in list(graph.nodes):
        want = plan.wanted(node)
        stats["float32_nodes"] += int(want == _CONVERTIBLE and node.op != "cast")
        inputs = list(node.inputs)
        for i, v in enumerate(inputs):
            have = plan.dtype[v]
            if have in (_CONVERTIBLE, half) and have != want and not (node.op == "cast" and i == 0 and have == half):
                inputs[i] = cast_of(v, want)
        if inputs != list(node.inputs):
            graph.set_inputs(node, inputs)
    graph.infer_types()
    for out in list(graph.outputs):
        if plan.dtype[out] == half and graph.type_of(out).dtype == half:
            _cast_output_back(graph, out)
            stats["casts"] += 1
    return stats


def _cast_output_back(graph: Graph, value: str) -> None:
    """Graph output `value`, computed in half, becomes float32 under the same name."""
    producer = graph.producer(value)
    index = producer.outputs.index(value)
    clone = graph.add_node(producer.op, producer.inputs, attrs=producer.attrs, meta=producer.meta)
    for old, new in zip(producer.outputs, clone.outputs):
        graph.replace_all_uses(old, new)
        graph.set_outputs([new if o == old else o for o in graph.outputs])
    graph.remove_node(producer)
    graph.add_node("cast", [clone.outputs[index]], attrs=dict(dtype=_CONVERTIBLE), outputs=[value])
    graph.set_outputs([value if o == clone.outputs[index] else o for o in graph.outputs])
