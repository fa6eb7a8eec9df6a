"""Shared by the fusion pass tests: a module's un-fused graph from either frontend, and the checks."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch

from graphopt.frontends.fx import trace
from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph
from graphopt.passes import Pass, PassContext, PassResult


def export_onnx(module: torch.nn.Module, x: torch.Tensor, opset: int = 17) -> onnx.ModelProto:
    """`module` through the TorchScript exporter, as models before opset 20 arrive."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated
        torch.onnx.export(
            module.eval(), (x,), buf, dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"]
        )
    return onnx.load_from_string(buf.getvalue())


def unfused(frontend: str, module: torch.nn.Module, shape: tuple[int, ...]) -> Graph:
    """`module` traced (fx) or imported from its ONNX export without the frontend's fusions (onnx)."""
    x = torch.randn(shape)
    if frontend == "fx":
        return trace(module.eval(), (x,))
    return load_onnx(export_onnx(module, x), canonicalize=False)


def fuse_and_check(graph: Graph, pass_: Pass, module: torch.nn.Module, seeds=(0, 1, 2)) -> PassResult:
    """Run `pass_`: the graph verifies, agrees with `module` to 1e-5 before and after, and a
    second run changes nothing."""
    before = graph.copy()
    result = pass_.run(graph, PassContext())
    graph.verify()
    shape = graph.type_of(graph.inputs[0]).shape
    for seed in seeds:
        x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
        with torch.no_grad():
            want = module.eval()(torch.from_numpy(x)).numpy()
        for g in (before, graph):
            np.testing.assert_allclose(g.run([x])[0], want, atol=1e-5, rtol=1e-5)
    again = pass_.run(graph, PassContext())
    assert not again.changed
    return result
