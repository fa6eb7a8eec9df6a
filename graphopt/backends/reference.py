"""`Graph.run`: execute a graph through its torch form, or onnxruntime when it must."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from graphopt.backends.torch import run_module
from graphopt.errors import GraphoptError

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


def ordered_inputs(graph: "Graph", inputs) -> list:
    """Inputs as a list in `graph.inputs` order, from a sequence or a name -> array mapping."""
    if isinstance(inputs, Mapping):
        missing = [i for i in graph.inputs if i not in inputs]
        if missing:
            raise GraphoptError(f"graph '{graph.name}' needs inputs {missing}")
        return [inputs[i] for i in graph.inputs]
    inputs = list(inputs) if isinstance(inputs, Sequence) else [inputs]
    if len(inputs) != len(graph.inputs):
        raise GraphoptError(f"graph '{graph.name}' takes {len(graph.inputs)} inputs "
                            f"({', '.join(graph.inputs)}), got {len(inputs)}")
    return inputs


def needs_onnxruntime(graph: "Graph") -> bool:
    return any(n.is_opaque and n.attrs.get("framework") == "onnx" for n in graph.nodes)


def run_graph(graph: "Graph", inputs) -> list[np.ndarray]:
    feeds = ordered_inputs(graph, inputs)
    if needs_onnxruntime(graph):
        from graphopt.backends.onnxruntime import run_onnx
        model = graph.cached("onnx_model", graph.to_onnx)
        return run_onnx(model, [np.asarray(x) for x in feeds])
    module = graph.cached("torch_module", graph.to_torch)
    return run_module(module, feeds)
