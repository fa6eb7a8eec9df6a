"""conv_transpose: stride with output padding, groups with dilation and a batch norm after, 1-d;
traced and from ONNX: graph.run, onnxruntime on to_onnx(), TVM x86 match torch; arm and cuda build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ops_support import (
    FRONTENDS,
    assert_matches,
    check_arm_and_cuda_build,
    check_canonical,
    check_imported_family,
    check_x86,
    imported,
    torch_outputs,
)
from torch import nn

pytest.importorskip("tvm")

import graphopt  # noqa: E402


class TransposedConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.grouped = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=2, groups=2, dilation=2, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)
        self.up1d = nn.ConvTranspose1d(4, 2, 4, stride=3, padding=1, output_padding=2)

    def forward(self, x):
        return self.up(x), self.bn(self.grouped(x)), self.up1d(x.flatten(2))


X = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = TransposedConvs().eval()
    graphs = {f: imported(model, (X,), f) for f in FRONTENDS}
    return model, graphs, torch_outputs(model, (X,))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_imports_canonical_and_runs(case, frontend):
    _, graphs, want = case
    check_imported_family(graphs[frontend], (X,), want, {"conv_transpose"})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    check_x86(graphs[frontend], (X,), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    check_arm_and_cuda_build(graphs, (X,))


def test_onnx_asymmetric_pads():
    """ONNX ConvTranspose with begin != end pads (torch cannot write them) against onnxruntime."""
    import onnx
    from onnx import helper, numpy_helper

    from graphopt.backends.onnxruntime import run_onnx

    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 0, 0, 2], output_padding=[1, 1]
    )
    graph = helper.make_graph(
        [node],
        "asym",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    want = run_onnx(model, [x])
    g = graphopt.load_onnx(model)
    check_canonical(g, {"conv_transpose"})
    assert_matches(g.run([x]), want, atol=1e-5)
    assert_matches(graphopt.optimize(g, example_inputs=(x,), target="x86")(x), want)
