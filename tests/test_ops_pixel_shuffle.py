"""pixel_shuffle and pixel_unshuffle; traced and from ONNX (DepthToSpace CRD and DCR): graph.run,
onnxruntime on to_onnx(), TVM x86 match torch; arm and cuda build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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


class Shuffles(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x)), F.pixel_shuffle(x, 2), F.pixel_unshuffle(x, 2)


X = torch.randn(2, 4, 6, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = Shuffles().eval()
    graphs = {f: imported(model, (X,), f) for f in FRONTENDS}
    return model, graphs, torch_outputs(model, (X,))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_imports_canonical_and_runs(case, frontend):
    _, graphs, want = case
    check_imported_family(graphs[frontend], (X,), want, {"pixel_shuffle"})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    check_x86(graphs[frontend], (X,), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    check_arm_and_cuda_build(graphs, (X,))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_onnx_depth_to_space_modes(mode):
    """DepthToSpace CRD is pixel_shuffle; DCR imports as reshape/permute/reshape; both against onnxruntime."""
    import onnx
    from onnx import helper

    from graphopt.backends.onnxruntime import run_onnx

    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)
    graph = helper.make_graph(
        [node],
        "d2s",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 3, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(48, dtype=np.float32).reshape(1, 8, 3, 2)
    want = run_onnx(model, [x])
    g = graphopt.load_onnx(model)
    check_canonical(g, {"pixel_shuffle"} if mode == "CRD" else {"reshape", "permute"})
    assert_matches(g.run([x]), want, atol=0)
    assert_matches(graphopt.optimize(g, example_inputs=(x,), target="x86")(x), want, atol=0)
