"""Text form of a Graph: one line per node, stable across runs, used by golden tests.

    graph tiny(%x: f32[1,3,8,8]) -> (%relu)
      @conv.weight: f32[4,3,3,3]
      %conv: f32[1,4,8,8] = conv(%x, @conv.weight) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
      %relu: f32[1,4,8,8] = relu(%conv)
      return %relu

Values are `%name`, parameters `@name`; attributes are sorted; a node whose name
differs from its output is suffixed `  # node_name`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.ir.ops import ValueRef

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


def format_attr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_attr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={format_attr(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, np.ndarray):
        return f"array<{v.dtype.name}{list(v.shape)}>"
    if isinstance(v, ValueRef):
        return f"${v.index}"
    if isinstance(v, (np.integer, np.floating)):
        return format_attr(v.item())
    return str(v)


def _ref(graph: "Graph", name: str) -> str:
    return f"@{name}" if graph.is_param(name) else f"%{name}"


def _typed(graph: "Graph", name: str) -> str:
    t = graph.values[name].type if name in graph.values else None
    return f"%{name}: {t if t is not None else '?'}"


def _param_line(graph: "Graph", name: str) -> str:
    p = graph.params[name]
    notes = []
    if not p.trainable:
        notes.append("frozen")
    if p.mask is not None:
        notes.append(f"sparsity={p.sparsity:.3f}")
    if p.encoding is not None:
        notes.append(f"encoding={p.encoding.describe()}")
    if p.data.size == 1:
        notes.append(f"value={format_attr(p.data.reshape(()).item())}")
    suffix = f"  ({', '.join(notes)})" if notes else ""
    return f"  @{name}: {graph.values[name].type}{suffix}"


def format_graph(graph: "Graph") -> str:
    ins = ", ".join(_typed(graph, i) for i in graph.inputs)
    outs = ", ".join(f"%{o}" for o in graph.outputs)
    lines = [f"graph {graph.name}({ins}) -> ({outs})"]
    lines += [_param_line(graph, p) for p in graph.params]
    for n in graph.nodes:
        lhs = ", ".join(_typed(graph, o) for o in n.outputs)
        args = ", ".join(_ref(graph, v) for v in n.inputs)
        attrs = f" {format_attr(n.attrs)}" if n.attrs else ""
        note = f"  # {n.name}" if n.outputs != (n.name,) else ""
        lines.append(f"  {lhs} = {n.op}({args}){attrs}{note}")
    lines.append(f"  return {', '.join(_ref(graph, o) for o in graph.outputs)}")
    return "\n".join(lines)
