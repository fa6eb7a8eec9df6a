"""Tuning measured through a TVM RPC tracker serving two devices.

One tracker on loopback, a local x86 server under key ``x86`` and the
emulated aarch64 server under key ``aarch64``. A tiny model is tuned for
``arm`` through key ``aarch64`` (candidates cross-compiled here, measured on
the emulated device) and for ``x86`` through key ``x86``; each database
then builds a model that matches torch: the arm one run on the emulated
server, the x86 one run here.

Needs the emulated root: run (as root) scripts/setup_aarch64_emulator.sh.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphopt.backends.tvm.emulator import SETUP_COMMAND, emulator_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not emulator_available(),
        reason=f"emulated aarch64 root not set up; run (as root): {SETUP_COMMAND}",
    ),
]

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
pytest.importorskip("tornado", reason="the TVM RPC tracker needs tornado")

from graphopt.api import import_model  # noqa: E402
from graphopt.backends.tvm import rpc  # noqa: E402
from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.backends.tvm.emulator import Aarch64Emulator  # noqa: E402
from graphopt.backends.tvm.lower import lower_to_relax  # noqa: E402
from graphopt.backends.tvm.schedule import apply_database, legalize  # noqa: E402
from graphopt.backends.tvm.targets import target_fingerprint  # noqa: E402
from graphopt.backends.tvm.tuning import (  # noqa: E402
    METADATA_FILE,
    RECORD_FILE,
    RPCConfig,
    load_database,
    tune,
)
from graphopt.backends.tvm.tuning_seed import read_seeds  # noqa: E402

TRIALS = 4
KEYS = {"arm": "aarch64", "x86": "x86"}  # target -> tracker key of its device


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(32, 16)

    def forward(self, x):
        return torch.relu(self.fc(x))


@pytest.fixture(scope="module")
def case():
    """The tiny model as a graphopt Graph, an input, and torch's output for it."""
    torch.manual_seed(0)
    net = Tiny().eval()
    x = torch.randn(1, 32)
    with torch.no_grad():
        expected = net(x).numpy()
    return import_model(net, (x,)), x.numpy(), expected


@pytest.fixture(scope="module")
def devices():
    """A tracker on loopback with a local x86 server and the emulated aarch64 server."""
    tracker = rpc.start_tracker()
    local = emu = None
    try:
        local = rpc.start_local_server(tracker, key=KEYS["x86"])
        emu = Aarch64Emulator(tracker=tracker, key=KEYS["arm"]).start()
        summary = rpc.wait_for_keys(tracker, list(KEYS.values()), timeout=120)
        yield tracker, emu, summary
    finally:
        if emu is not None:
            emu.stop()
        if local is not None:
            local.terminate()
        tracker.terminate()


@pytest.fixture(scope="module")
def tuned(case, devices, tmp_path_factory):
    """Work dirs tuned for arm and for x86, each measured through its own key."""
    tracker = devices[0]
    mod = lower_to_relax(case[0])
    dirs = {}
    for target, key in KEYS.items():
        dirs[target] = tmp_path_factory.mktemp(f"db-{target}")
        runner = RPCConfig(tracker.host, tracker.port, key)
        tune(mod, target, dirs[target], TRIALS, runner=runner, num_trials_per_iter=TRIALS, seed=0)
    return dirs


def test_tracker_lists_both_devices(devices):
    summary = devices[2]
    assert {"x86", "aarch64"} <= set(summary["queue_info"])
    servers = {s["key"] for s in summary["server_info"]}
    assert {"server:x86", "server:aarch64"} <= servers


@pytest.mark.parametrize("target", list(KEYS))
def test_records_were_measured_on_the_device(tuned, target):
    work_dir = tuned[target]
    meta = json.loads((work_dir / METADATA_FILE).read_text())
    assert meta["target"] == target_fingerprint(target)
    entries = [json.loads(line) for line in (work_dir / RECORD_FILE).read_text().splitlines()]
    assert len(entries) == TRIALS + len(read_seeds(work_dir))  # the trials and each kernel's default schedule
    run_secs = [sum(e[1][1]) / len(e[1][1]) for e in entries]
    assert min(run_secs) < 1.0  # a failed measurement is recorded as 1e10 s
    recorded_target = entries[0][1][2]
    assert recorded_target.get("mtriple", "") == ("aarch64-linux-gnu" if target == "arm" else "")


@pytest.mark.parametrize("target", list(KEYS))
def test_database_schedules_the_kernel(case, tuned, target):
    database = load_database(tuned[target], target)
    # a build applies per kernel the fastest tuned record, and only where it beat the default schedule
    assert database is not None and len(database) <= 1
    kernels = apply_database(legalize(lower_to_relax(case[0]), target), target, database)
    scheduled = [f for _, f in kernels.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert sum(bool(f.attrs.get("tirx.is_scheduled", False)) for f in scheduled) == len(database)


def test_tuned_arm_build_runs_on_the_emulated_device(case, devices, tuned):
    graph, x, expected = case
    model = compile_graph(graph, "arm", database=load_database(tuned["arm"], "arm"))
    assert model.is_cross
    got = model.run_remote(devices[1].connect(), x)  # through the tracker, key aarch64
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_tuned_x86_build_runs_here(case, tuned):
    graph, x, expected = case
    model = compile_graph(graph, "x86", database=load_database(tuned["x86"], "x86"))
    np.testing.assert_allclose(model(x), expected, atol=1e-4, rtol=0)
