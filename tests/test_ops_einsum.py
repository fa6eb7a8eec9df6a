"""einsum: as batched matmul, permutation, full contraction, a diagonal (TVM's einsum), matrix-vector;
traced and from ONNX: graph.run, onnxruntime on to_onnx(), TVM x86 match torch; arm and cuda build."""

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


class Einsums(nn.Module):
    def forward(self, x, y):
        return (
            torch.einsum("bchw,bdhw->bcd", x, y),  # batched matmul over two contracted letters
            torch.einsum("bchw->bwhc", x),  # a permutation
            torch.einsum("bchw,bchw->b", x, y),  # a full contraction
            torch.einsum("bcii->bci", x),  # a diagonal: TVM's einsum
            torch.einsum("bchw,w->bch", x, y[0, 0, 0]),  # matrix-vector
        )


X = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = Einsums().eval()
    graphs = {f: imported(model, (X, Y), f) for f in FRONTENDS}
    return model, graphs, torch_outputs(model, (X, Y))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_imports_canonical_and_runs(case, frontend):
    _, graphs, want = case
    check_imported_family(graphs[frontend], (X, Y), want, {"einsum"})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    check_x86(graphs[frontend], (X, Y), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    check_arm_and_cuda_build(graphs, (X, Y))


def test_matmul_shaped_einsum_lowers_to_matmul(case):
    from graphopt.backends.tvm.lower import lower_to_relax

    _, graphs, _ = case
    text = lower_to_relax(graphs["traced"]).script()
    assert text.count("R.matmul") == 3 and text.count("R.einsum") == 1
