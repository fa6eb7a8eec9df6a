"""A segmentation-style net and a small LSTM classifier compile for x86 and arm and match torch.

The segmentation net (encoder convs with batch norm and pooling, a decoder of ConvTranspose2d and
bilinear upsampling, skip concats) is all canonical ops, traced and imported from ONNX. The LSTM
classifier keeps its recurrence opaque (traced: lowered through TVM's torch frontend). x86 runs
here; the arm builds run on the emulated aarch64 device (scripts/setup_aarch64_emulator.sh).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ops_support import assert_matches, check_canonical, imported, torch_outputs
from torch import nn

pytest.importorskip("tvm")

import graphopt  # noqa: E402
from graphopt.backends.tvm.emulator import SETUP_COMMAND, emulated_aarch64_server, emulator_available  # noqa: E402


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SegNet(nn.Module):
    """Encoder: 3 -> 8 -> 16 (max pool) -> 32 (stride 2); decoder: a transposed conv up to 1/2
    concatenated with the 16-channel skip, bilinear up to full size concatenated with the
    8-channel skip, a 1x1 head of 3 classes."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.down1 = conv_bn(8, 16)
        self.down2 = conv_bn(16, 32, stride=2)
        self.up = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
        self.fuse1 = conv_bn(32, 16)
        self.fuse2 = conv_bn(16 + 8, 8)
        self.head = nn.Conv2d(8, 3, 1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        s1 = self.stem(x)  # [N, 8, H, W]
        s2 = self.down1(F.max_pool2d(s1, 2))  # [N, 16, H/2, W/2]
        deep = self.down2(s2)  # [N, 32, H/4, W/4]
        d = self.fuse1(torch.cat([F.relu(self.up(deep)), s2], dim=1))
        d = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.fuse2(torch.cat([d, s1], dim=1)))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


IMAGE = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
SEQUENCE = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))


def seeded(cls) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


@pytest.fixture(scope="module")
def segmentation():
    """(model, torch outputs, {frontend: (x86 build, arm build)})."""
    model = seeded(SegNet)
    builds = {}
    for frontend in ("traced", "onnx"):
        graph = imported(model, (IMAGE,), frontend)
        check_canonical(graph, {"conv_transpose", "resize", "concat"})
        builds[frontend] = tuple(graphopt.optimize(graph, example_inputs=(IMAGE,), target=t) for t in ("x86", "arm"))
    return model, torch_outputs(model, (IMAGE,)), builds


@pytest.fixture(scope="module")
def lstm():
    model = seeded(LSTMClassifier)
    builds = tuple(graphopt.optimize(model, example_inputs=(SEQUENCE,), target=t) for t in ("x86", "arm"))
    return model, torch_outputs(model, (SEQUENCE,)), builds


@pytest.mark.parametrize("frontend", ["traced", "onnx"])
def test_segmentation_x86_matches_torch(segmentation, frontend):
    _, want, builds = segmentation
    x86, arm = builds[frontend]
    assert_matches(x86(IMAGE.numpy()), want)
    assert arm.is_cross and arm.host_arch == "aarch64"


def test_lstm_x86_matches_torch(lstm):
    _, want, (x86, arm) = lstm
    assert_matches(x86(SEQUENCE.numpy()), want)
    assert arm.is_cross and arm.host_arch == "aarch64"


@pytest.fixture(scope="module")
def emulator():
    if not emulator_available():
        pytest.skip(f"emulated aarch64 root not set up; run (as root): {SETUP_COMMAND}")
    with emulated_aarch64_server() as emu:
        yield emu


def run_on_emulator(emulator, compiled, x: np.ndarray):
    """One session per build: a session that loaded another library under run_remote's file name cannot
    load the next, and closes only once Python frees TVM's VirtualMachine (a reference cycle)."""
    gc.collect()
    session = emulator.connect()
    try:
        return compiled.run_remote(session, x)
    finally:
        del session
        gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["traced", "onnx"])
def test_segmentation_runs_on_emulated_aarch64(segmentation, emulator, frontend):
    _, want, builds = segmentation
    assert_matches(run_on_emulator(emulator, builds[frontend][1], IMAGE.numpy()), want)


@pytest.mark.slow
def test_lstm_runs_on_emulated_aarch64(lstm, emulator):
    _, want, (_, arm) = lstm
    assert_matches(run_on_emulator(emulator, arm, SEQUENCE.numpy()), want)
