"""`Graph.run`: execute a graph through its torch form, or onnxruntime when it must."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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
        raise GraphoptError(
            f"graph '{graph.name}' takes {len(graph.inputs)} inputs ({', '.join(graph.inputs)}), got {len(inputs)}"
        )
    return inputs


def needs_onnxruntime(graph: "Graph") -> bool:
    return any(n.is_opaque and n.attrs.get("framework") == "onnx" for n in graph.nodes)


def run_graph(graph: "Graph", inputs, *, capture: Sequence[str] | None = None):
    """Outputs of `graph` on `inputs`; with `capture`, `(outputs, {value: array})`."""
    feeds = ordered_inputs(graph, inputs)
    if capture is None:
        return _run(graph, feeds, "", graph.outputs)
    capture = list(dict.fromkeys(capture))
    for v in capture:
        graph.value(v)
    results = _run(graph, feeds, "capture:" + "\0".join(capture), [*graph.outputs, *capture])
    n = len(graph.outputs)
    return results[:n], dict(zip(capture, results[n:]))


def _run(graph: "Graph", feeds: list, key: str, outputs: Sequence[str]) -> list[np.ndarray]:
    # One module per output list, cached until the next edit.
    if needs_onnxruntime(graph):
        from graphopt.backends.onnxruntime import run_onnx

        unique = list(dict.fromkeys(outputs))
        model = graph.cached(f"onnx_model{key}", lambda: _with_outputs(graph, unique).to_onnx())
        by_name = dict(zip(unique, run_onnx(model, [np.asarray(x) for x in feeds])))
        return [by_name[o] for o in outputs]
    from graphopt.emit.torch import emit_torch

    module = graph.cached(f"torch_module{key}", lambda: emit_torch(graph, outputs=outputs))
    return run_module(module, feeds)


def _with_outputs(graph: "Graph", outputs: Sequence[str]) -> "Graph":
    if list(outputs) == list(graph.outputs):
        return graph
    g = graph.copy()
    g.set_outputs(outputs)
    return g
