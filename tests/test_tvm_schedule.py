"""The schedule stage and build: CPU numerics, CUDA builds on a CPU machine, GPU runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402
from tvm.s_tir import dlight as dl  # noqa: E402

from graphopt.backends.tvm.schedule import (  # noqa: E402
    UnscheduledKernelError,
    apply_default_schedules,
    build,
    cuda_ptx,
    cuda_source,
    default_rules,
    legalize,
)
from graphopt.backends.tvm.targets import resolve_target  # noqa: E402


class ConvLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = ConvLinear().eval()
    x = torch.randn(2, 3, 8, 8)
    mod = from_exported_program(torch.export.export(net, (x,)))
    with torch.no_grad():
        expected = net(x).numpy()
    return mod, x.numpy(), expected


def _run(executable, device, x):
    vm = relax.VirtualMachine(executable, device)
    out = vm["main"](tvm.runtime.tensor(x, device=device))
    return out[0].numpy()


def _kernels(mod):
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_cpu_build_matches_torch(model):
    mod, x, expected = model
    np.testing.assert_allclose(_run(build(mod, "x86"), tvm.cpu(), x), expected, atol=1e-5)


def test_default_rules_per_target():
    cpu = [
        "Conv2dInt8",
        "MatmulInt8",
        "DepthwiseConv2dInt8",
        "Conv2dNCHW",
        "DepthwiseConv2dNCHW",
        "Matmul",
        "Reduction",
    ]
    cpu.append("Fallback")
    assert [type(r).__name__ for r in default_rules("x86")] == cpu
    assert [type(r).__name__ for r in default_rules("arm")] == cpu
    names = [type(r).__name__ for r in default_rules("cuda-sm80")]
    assert names == ["Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"]


def test_cpu_schedule_stage_schedules_every_kernel(model):
    scheduled = apply_default_schedules(legalize(model[0], "x86"), "x86")
    kernels = _kernels(scheduled)
    assert kernels and all(f.attrs.get("tirx.is_scheduled", False) for f in kernels.values())


def test_gpu_rules_bind_every_kernel_to_threads(model):
    legal = legalize(model[0], "cuda-sm80")
    kernels = _kernels(legal)
    assert len(kernels) >= 2  # conv+relu, linear, ...
    assert all("threadIdx" not in f.script() for f in kernels.values())
    scheduled = _kernels(apply_default_schedules(legal, "cuda-sm80"))
    assert scheduled.keys() == kernels.keys()
    for name, func in scheduled.items():
        assert func.attrs["tirx.is_scheduled"], name
        assert "threadIdx.x" in func.script() and "blockIdx.x" in func.script(), name


def test_cuda_build_refuses_unscheduled_kernels(model):
    # Left to itself TVM 0.27 would build them as host code, without an error.
    with pytest.raises(UnscheduledKernelError, match="fused_conv2d"):
        build(model[0], "cuda-sm80", schedule=lambda mod, target: mod)


@pytest.mark.parametrize("preset, arch", [("cuda-sm80", "sm_80"), ("cuda-sm90", "sm_90")])
def test_cuda_build_on_cpu_gives_kernels_and_ptx(model, preset, arch):
    executable = build(model[0], preset)
    source = cuda_source(executable)
    kernels = [line for line in source.splitlines() if "__global__" in line and "(" in line]
    assert kernels and "threadIdx.x" in source
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed: no PTX")
    ptx = cuda_ptx(executable, preset)
    assert f".target {arch}" in ptx
    assert ptx.count(".entry") >= 2 and "%tid.x" in ptx


def test_cuda_source_needs_a_cuda_build(model):
    with pytest.raises(ValueError, match="no CUDA module"):
        cuda_source(build(model[0], "x86"))


def test_dlight_rule_list_can_be_replaced(model):
    legal = legalize(model[0], "cuda-sm80")
    only_fallback = apply_default_schedules(legal, "cuda-sm80", rules=[dl.gpu.Fallback()])
    assert all(f.attrs["tirx.is_scheduled"] for f in _kernels(only_fallback).values())


@pytest.mark.gpu
@pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA device")
def test_cuda_build_runs_on_the_gpu(model):
    mod, x, expected = model
    sm = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    target = resolve_target("cuda-sm90" if sm >= "sm_90" else "cuda-sm80")
    got = _run(build(mod, target), tvm.cuda(0), x)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
