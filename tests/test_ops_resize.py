"""resize: nearest (scale, size), bilinear (Upsample, align_corners, a fractional scale), bicubic, 1-d
linear, nearest-exact; traced and from ONNX: graph.run, onnxruntime on to_onnx(), TVM x86 match
torch; arm and cuda build."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ops_support import (
    FRONTENDS,
    assert_matches,
    check_arm_and_cuda_build,
    check_canonical,
    check_imported_family,
    check_onnx_emission,
    check_x86,
    imported,
    torch_outputs,
)
from torch import nn

pytest.importorskip("tvm")

import graphopt  # noqa: E402


class Resizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")

    def forward(self, x):
        return (
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.interpolate(x, size=(7, 3), mode="nearest"),
            self.upsample(x),
            F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True),
            F.interpolate(x, scale_factor=1.5, mode="bilinear"),  # 5 -> 7: torch reads at 5/7.5, not 5/7
            F.interpolate(x, size=(6, 8), mode="bicubic"),
            F.interpolate(x, scale_factor=1.7, mode="bicubic", align_corners=True),
            F.interpolate(x.flatten(2), scale_factor=1.5, mode="linear"),
        )


X = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = Resizes().eval()
    graphs = {f: imported(model, (X,), f) for f in FRONTENDS}
    return model, graphs, torch_outputs(model, (X,))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_imports_canonical_and_runs(case, frontend):
    _, graphs, want = case
    check_imported_family(graphs[frontend], (X,), want, {"resize"})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_x86_matches_torch(case, frontend):
    _, graphs, want = case
    check_x86(graphs[frontend], (X,), want)


def test_arm_and_cuda_build(case):
    _, graphs, _ = case
    check_arm_and_cuda_build(graphs, (X,))


class NearestExact(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest-exact"), F.interpolate(
            x, size=(3, 4), mode="nearest-exact"
        )


def test_nearest_exact_traced():
    """torch.onnx cannot export nearest-exact; traced it is half-pixel with ties rounded up."""
    model = NearestExact().eval()
    want = torch_outputs(model, (X,))
    graph = graphopt.trace(model, (X,))
    check_canonical(graph, {"resize"})
    assert_matches(graph.run([X.numpy()]), want, atol=0)
    check_onnx_emission(graph, (X.numpy(),), want)
    assert_matches(graphopt.optimize(graph, example_inputs=(X,), target="x86")(X.numpy()), want)
