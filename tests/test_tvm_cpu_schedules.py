"""graphopt's CPU schedule rules: each rule takes its kernels, and scheduled kernels compute what torch computes.

Odd shapes on purpose: channels that are not a multiple of the vector width,
1x1 and 7x7 kernels, stride 2, dilation, groups, batch > 1, non-square inputs.
Each case is built twice, unscheduled and with the default CPU rules, and both
are compared with torch; the rule expected for the case must have scheduled
its kernel. The arm preset is built (not run) for a few cases.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from graphopt.backends.tvm import schedules  # noqa: E402
from graphopt.backends.tvm.schedule import build, default_rules, legalize  # noqa: E402
from graphopt.backends.tvm.targets import resolve_target  # noqa: E402

X86 = resolve_target("x86")


class Conv(torch.nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, dilation=1, groups=1, residual=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride, padding, dilation, groups)
        self.residual = residual

    def forward(self, x):
        y = self.conv(x)
        if self.residual:
            y = y + 0.5
        return torch.relu(y)


class Linear(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.fc = torch.nn.Linear(cin, cout)

    def forward(self, x):
        return torch.nn.functional.gelu(self.fc(x))


class Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) * 0.125, dim=-1) @ v


class Norm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x) * 2.0


class Pool(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.max_pool2d(x, 3, 2, 1) + x.mean((2, 3), keepdim=True)[:, :, :1, :1]


class Transpose(torch.nn.Module):
    def forward(self, x):
        return (x.permute(0, 2, 3, 1) * 3.0).reshape(x.shape[0], -1)


def _rand(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


# (id, module, inputs, rule expected on the main kernel)
CASES = [
    ("conv3x3-c13-nonsquare", Conv(5, 13, 3, padding=1), [_rand(1, 5, 9, 14)], "Conv2dNCHW"),
    ("conv3x3-c32-residual", Conv(8, 32, 3, padding=1, residual=True), [_rand(1, 8, 10, 10)], "Conv2dNCHW"),
    ("conv1x1-c24-batch3", Conv(16, 24, 1), [_rand(3, 16, 7, 11)], "Conv2dNCHW"),
    ("conv7x7-stride2", Conv(3, 16, 7, stride=2, padding=3), [_rand(2, 3, 23, 17)], "Conv2dNCHW"),
    ("conv3x3-dilation2", Conv(6, 32, 3, padding=2, dilation=2), [_rand(1, 6, 12, 9)], "Conv2dNCHW"),
    ("conv-groups2", Conv(8, 16, 3, padding=1, groups=2), [_rand(2, 8, 6, 10)], "Conv2dNCHW"),
    ("conv-no-epilogue", torch.nn.Conv2d(4, 16, 3, bias=False), [_rand(1, 4, 9, 8)], "Conv2dNCHW"),
    ("depthwise3x3-c20", Conv(20, 20, 3, padding=1, groups=20), [_rand(1, 20, 15, 13)], "DepthwiseConv2dNCHW"),
    ("depthwise3x3-stride2-batch2", Conv(32, 32, 3, 2, 1, groups=32), [_rand(2, 32, 14, 9)], "DepthwiseConv2dNCHW"),
    ("linear-odd", Linear(37, 23), [_rand(5, 37)], "Matmul"),
    ("linear-3d", Linear(64, 96), [_rand(2, 17, 64)], "Matmul"),
    ("attention", Attention(), [_rand(2, 3, 17, 8), _rand(2, 3, 17, 8), _rand(2, 3, 17, 8)], "Matmul"),
    ("layer-norm", Norm(40), [_rand(3, 7, 40)], "Reduction"),
    ("pool-mean", Pool(), [_rand(2, 5, 11, 8)], "Reduction"),
    ("transpose", Transpose(), [_rand(2, 6, 5, 7)], "Fallback"),
]


def _relax(module, inputs):
    return from_exported_program(torch.export.export(module.eval(), tuple(inputs)))


def _run(executable, inputs):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x.numpy()) for x in inputs])
    return out[0].numpy()


def _unscheduled(mod, target):
    return mod


@pytest.mark.parametrize("name,module,inputs,rule", CASES, ids=[c[0] for c in CASES])
def test_scheduled_kernels_match_torch(name, module, inputs, rule):
    torch.manual_seed(0)
    mod = _relax(module, inputs)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    kernels = [f for _, f in legalize(mod, X86).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    taken = [
        type(next(r for r in schedules.cpu_rules(X86) if r.apply(f, X86, False) is not None)).__name__ for f in kernels
    ]
    assert rule in taken, f"{name}: expected {rule} on a kernel, rules taken: {taken}"
    plain = _run(build(mod, X86, schedule=_unscheduled), inputs)
    scheduled = _run(build(mod, X86), inputs)
    np.testing.assert_allclose(plain, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scheduled, expected, rtol=1e-4, atol=1e-4)


def test_every_kernel_is_scheduled_on_cpu():
    mod = _relax(*CASES[0][1:3])
    legal = legalize(mod, X86)
    with X86:
        out = tvm.s_tir.dlight.ApplyDefaultSchedule(*default_rules(X86))(legal)
    kernels = [f for _, f in out.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels and all(f.attrs.get("tirx.is_scheduled", False) for f in kernels)
    assert all("T.parallel" in f.script() for f in kernels if "conv2d" in f.script())


def test_conv_weights_are_packed_at_build_time():
    mod = _relax(*CASES[1][1:3])
    scheduled = schedules_applied(mod)
    names = [gv.name_hint for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(n.endswith("_prepacked") for n in names), names
    # the packing kernel ran at build time on the constant weight and is gone
    assert not any(n.endswith("_weight_prepack") for n in names), names


def schedules_applied(mod):
    from graphopt.backends.tvm.schedule import apply_default_schedules  # noqa: PLC0415

    return apply_default_schedules(legalize(mod, X86), X86)


class _Failing(schedules.Conv2dNCHW):
    def schedule(self, sch, target):
        raise ValueError("deliberate failure")


def test_failing_rule_falls_back_with_one_line_note(caplog):
    mod = _relax(*CASES[0][1:3])
    inputs = CASES[0][2]
    rules = [_Failing(), *schedules.cpu_rules(X86)[1:]]
    with caplog.at_level(logging.INFO, logger="graphopt.backends.tvm.schedules"):
        out = _run(build(mod, X86, schedule=lambda m, t: _apply(m, t, rules)), inputs)
    with torch.no_grad():
        np.testing.assert_allclose(out, CASES[0][1](*inputs).numpy(), rtol=1e-4, atol=1e-4)
    notes = [r.getMessage() for r in caplog.records if "deliberate failure" in r.getMessage()]
    assert notes and all("\n" not in n and "conv2d" in n for n in notes)


def _apply(mod, target, rules):
    from graphopt.backends.tvm.schedule import apply_default_schedules  # noqa: PLC0415

    return apply_default_schedules(mod, target, rules)


@pytest.mark.parametrize("case", [0, 6, 10], ids=["conv", "depthwise", "attention"])
def test_arm_preset_builds(case):
    _, module, inputs, _ = CASES[case]
    executable = build(_relax(module, inputs), "arm")
    assert executable is not None


@pytest.mark.slow
def test_arm_build_runs_on_emulated_aarch64(tmp_path):
    """Conv, depthwise and attention kernels scheduled for the arm preset compute the right thing on aarch64."""
    from graphopt.backends.tvm.emulator import emulated_aarch64_server, emulator_available  # noqa: PLC0415
    from graphopt.backends.tvm.rpc import run_remote_vm  # noqa: PLC0415

    if not emulator_available():
        pytest.skip("emulated aarch64 root not set up (scripts/setup_aarch64_emulator.sh)")
    from tvm.support.cc import cross_compiler  # noqa: PLC0415

    net = torch.nn.Sequential(Conv(3, 16, 3, padding=1), Conv(16, 16, 3, 2, 1, groups=16), Conv(16, 24, 1)).eval()
    x = _rand(1, 3, 10, 9)
    with torch.no_grad():
        expected = net(x).numpy()
    path = tmp_path / "net.so"
    build(_relax(net, [x]), "arm").export_library(str(path), fcompile=cross_compiler("aarch64-linux-gnu-g++"))
    with emulated_aarch64_server() as emu:
        (got,) = run_remote_vm(emu.connect(), path, [x.numpy()])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
