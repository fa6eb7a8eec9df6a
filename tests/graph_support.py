"""Helpers shared by test files: importing a model through either frontend, checked pipeline runs.

They live outside conftest.py so test files import them by a module name no other conftest.py shadows.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch


def run_checked_pipeline(graph, inputs, pipeline: str):
    """(PipelineResult, PassContext) of `pipeline` on `graph` with the default instruments."""
    from graphopt.passes import PassContext, Pipeline, default_instruments

    text = str(graph)
    ctx = PassContext(instruments=default_instruments(), inputs=[inputs])
    out = Pipeline.parse(pipeline).run(graph, ctx)
    assert str(graph) == text  # the input graph is never touched
    out.graph.verify()
    return out, ctx


def assert_same_outputs(before, after, inputs, atol: float = 1e-5) -> None:
    rng = np.random.default_rng(1)  # the verifier checked `inputs`; one more seeded set
    x = [rng.standard_normal(a.shape).astype(a.dtype) if a.dtype.kind == "f" else a for a in inputs]
    for a, b in zip(before.run(x), after.run(x)):
        np.testing.assert_allclose(b, a, atol=atol, rtol=atol)


def _import(frontend: str, model: torch.nn.Module, inputs: tuple):
    if frontend == "fx":
        from graphopt.frontends.fx import trace

        return trace(model, inputs)
    from graphopt.frontends.onnx import load_onnx

    buf = io.BytesIO()
    # No constant folding, so batch norms and other foldable patterns reach our passes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated
        torch.onnx.export(model, inputs, buf, dynamo=False, do_constant_folding=False)
    return load_onnx(onnx.load_from_string(buf.getvalue()))
