"""aarch64 code cross-compiled here runs on the emulated aarch64 RPC server.

Needs the emulated root: run (as root) scripts/setup_aarch64_emulator.sh.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.backends.tvm.emulator import (
    SETUP_COMMAND,
    emulated_aarch64_server,
    emulator_available,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not emulator_available(),
        reason=f"emulated aarch64 root not set up; run (as root): {SETUP_COMMAND}",
    ),
]

AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
CROSS_CXX = "aarch64-linux-gnu-g++"


def _tiny_net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.flatten(1))

    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def net_case():
    """The tiny net as a Relax module, an input, and torch's output for it."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    net = _tiny_net()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
        mod = from_exported_program(torch.export.export(net, (torch.from_numpy(x),)))
    return mod, x, expected


def _build(mod, target, path, cross_cxx=None):
    import tvm
    from tvm.support.cc import cross_compiler

    ex = tvm.compile(mod, target=tvm.target.Target(target))
    ex.export_library(str(path), fcompile=cross_compiler(cross_cxx) if cross_cxx else None)
    return path


@pytest.fixture(scope="module")
def aarch64_lib(net_case, tmp_path_factory):
    return _build(net_case[0], AARCH64_TARGET, tmp_path_factory.mktemp("a64") / "net.so", CROSS_CXX)


def test_runs_on_emulated_aarch64_and_matches_torch(net_case, aarch64_lib):
    from graphopt.backends.tvm.rpc import run_remote_vm

    _, x, expected = net_case
    with emulated_aarch64_server() as emu:
        (got,) = run_remote_vm(emu.connect(), aarch64_lib, [x])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_tracker_serves_x86_and_emulated_aarch64(net_case, aarch64_lib, tmp_path):
    pytest.importorskip("tornado", reason="the TVM RPC tracker needs tornado")
    from tvm import rpc

    from graphopt.backends.tvm.rpc import (
        run_remote_vm,
        start_local_server,
        start_tracker,
        tracker_address,
        wait_for_keys,
    )

    mod, x, expected = net_case
    libs = {"x86": _build(mod, "llvm", tmp_path / "net_x86.so"), "aarch64": aarch64_lib}
    tracker = start_tracker()
    local = None
    try:
        local = start_local_server(tracker=tracker, key="x86")
        with emulated_aarch64_server(tracker=tracker, key="aarch64"):
            summary = wait_for_keys(tracker, ["x86", "aarch64"], timeout=120)
            assert {"x86", "aarch64"} <= set(summary["queue_info"])
            # Each key leads to a device that runs code built for its own arch.
            client = rpc.connect_tracker(*tracker_address(tracker))
            for key, lib in libs.items():
                (got,) = run_remote_vm(client.request(key), lib, [x])
                np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=key)
    finally:
        if local is not None:
            local.terminate()
        tracker.terminate()
