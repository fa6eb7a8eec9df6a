"""Shared checks for the canonical op families (tests/test_ops_*.py).

Each family is one small model with an output per form. It is traced and exported to ONNX;
both imports must hold only canonical ops, `graph.run` and onnxruntime on `to_onnx()` must
match torch, `optimize(..., target="x86")` must match to 1e-4, and arm and cuda must build.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

import graphopt
from graphopt.backends.onnxruntime import run_onnx

ATOL = 1e-4
FRONTENDS = ("traced", "onnx")


def onnx_bytes(model: nn.Module, inputs: tuple, opset: int = 17) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, buf, dynamo=False, opset_version=opset)
    return buf.getvalue()


def imported(model: nn.Module, inputs: tuple, frontend: str):
    """The graph of `model` from one frontend."""
    if frontend == "traced":
        return graphopt.trace(model, inputs)
    return graphopt.load_onnx(onnx_bytes(model, inputs))


def torch_outputs(model: nn.Module, inputs: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*inputs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def as_list(out) -> list[np.ndarray]:
    return [np.asarray(o) for o in (out if isinstance(out, (tuple, list)) else (out,))]


def assert_matches(got, want: list[np.ndarray], atol: float = ATOL, names=None) -> None:
    got = as_list(got)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        what = names[i] if names else f"output {i}"
        assert g.shape == w.shape and g.dtype == w.dtype, (what, g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=atol, rtol=0, err_msg=what)


def check_canonical(graph, ops: set[str]) -> None:
    opaque = [n.attrs.get("target") or n.attrs.get("op_type") for n in graph.nodes if n.is_opaque]
    assert not opaque, f"opaque nodes: {opaque}"
    assert ops <= {n.op for n in graph.nodes}, {n.op for n in graph.nodes}


def check_onnx_emission(graph, inputs: tuple, want: list[np.ndarray], atol: float = 1e-5) -> None:
    """to_onnx() runs in onnxruntime and matches torch."""
    feeds = [np.asarray(x) for x in inputs]
    assert_matches(run_onnx(graph.to_onnx(), feeds), want, atol=atol)


def check_imported_family(graph, inputs: tuple, want: list[np.ndarray], ops: set[str]) -> None:
    """Canonical ops only, graph.run and onnxruntime on to_onnx() match torch."""
    feeds = [np.asarray(x) for x in inputs]
    check_canonical(graph, ops)
    assert_matches(graph.run(feeds), want, atol=1e-5)
    check_onnx_emission(graph, tuple(feeds), want)


def check_x86(graph, inputs: tuple, want: list[np.ndarray]) -> None:
    """optimize(..., target="x86") matches torch to ATOL."""
    assert_matches(
        graphopt.optimize(graph, example_inputs=inputs, target="x86")(*[np.asarray(x) for x in inputs]), want
    )


def check_arm_and_cuda_build(graphs: dict, inputs: tuple) -> None:
    """The traced graph builds for arm, the imported one for cuda."""
    assert graphopt.optimize(graphs["traced"], example_inputs=inputs, target="arm").is_cross
    assert graphopt.optimize(graphs["onnx"], example_inputs=inputs, target="cuda").device_kind == "cuda"
