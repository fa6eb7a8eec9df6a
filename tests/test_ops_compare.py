"""comparisons (equal, less, greater, less_equal, greater_equal -> bool) and where; traced and from
ONNX: graph.run, onnxruntime on to_onnx(), TVM x86 match torch; arm and cuda build."""

from __future__ import annotations

import pytest
import torch
from ops_support import (
    FRONTENDS,
    check_arm_and_cuda_build,
    check_imported_family,
    check_x86,
    imported,
    torch_outputs,
)
from torch import nn

pytest.importorskip("tvm")


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
    check_imported_family(
        graphs[frontend], (X, Y), want, {"greater", "less", "equal", "greater_equal", "less_equal", "where"}
    )


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    check_x86(graphs[frontend], (X, Y), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    check_arm_and_cuda_build(graphs, (X, Y))
