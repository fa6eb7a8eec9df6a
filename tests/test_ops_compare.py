"""comparisons (equal, less, greater, less_equal, greater_equal -> bool) and where; traced and from
ONNX: graph.run, onnxruntime on to_onnx(), TVM x86 match torch; arm and cuda build."""

from __future__ import annotations

import pytest
import torch
from ops_support import FRONTENDS, assert_matches, check_canonical, check_onnx_emission, imported, torch_outputs
from torch import nn

pytest.importorskip("tvm")

import graphopt  # noqa: E402


class Comparisons(nn.Module):
    def forward(self, x, y):
        return (
            x > 0,
            x < y,
            x.clamp(-0.5, 0.5) == x,
            x >= 0.5,
            x <= y[:, :1],
            torch.where(x > 0, x, 0.1 * x),
            torch.where(x < y, x, y),
            torch.where(x == x, 1.0, 0.0) + x,
        )


X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = Comparisons().eval()
    graphs = {f: imported(model, (X, Y), f) for f in FRONTENDS}
    return model, graphs, torch_outputs(model, (X, Y))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_imports_canonical_and_runs(case, frontend):
    _, graphs, want = case
    check_canonical(graphs[frontend], {"greater", "less", "equal", "greater_equal", "less_equal", "where"})
    assert_matches(graphs[frontend].run([X.numpy(), Y.numpy()]), want, atol=1e-5)
    check_onnx_emission(graphs[frontend], (X.numpy(), Y.numpy()), want)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    assert_matches(graphopt.optimize(graphs[frontend], example_inputs=(X, Y), target="x86")(X.numpy(), Y.numpy()), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    assert graphopt.optimize(graphs["traced"], example_inputs=(X, Y), target="arm").is_cross
    assert graphopt.optimize(graphs["onnx"], example_inputs=(X, Y), target="cuda").device_kind == "cuda"
