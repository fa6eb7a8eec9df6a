"""MetaSchedule tuning: records, resuming, damaged and foreign databases, RPC measurement.

Tuning is slow on a 2-core machine, so the model is one small linear layer
and every run spends 4 trials; the first tuning in a process also pays ~1
min for TVM to import its tensor intrinsics.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from graphopt.backends.tvm.schedule import apply_database, build, legalize  # noqa: E402
from graphopt.backends.tvm.targets import target_fingerprint  # noqa: E402
from graphopt.backends.tvm.tuning import (  # noqa: E402
    METADATA_FILE,
    RECORD_FILE,
    RPCConfig,
    TuningDatabaseError,
    TuningDatabaseWarning,
    TuningError,
    load_database,
    tune,
)

TRIALS = 4
FAST = {"num_trials_per_iter": TRIALS, "seed": 0}
SEEDS = 1  # the one kernel's default schedule, measured and recorded before the trials


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 32)

    def forward(self, x):
        return torch.relu(self.fc(x))


def tiny_model():
    torch.manual_seed(0)
    net = Tiny().eval()
    x = torch.randn(4, 64)
    with torch.no_grad():
        expected = net(x).numpy()
    return from_exported_program(torch.export.export(net, (x,))), x.numpy(), expected


def records(work_dir: Path) -> list[str]:
    return (work_dir / RECORD_FILE).read_text().splitlines()


def run(executable, x):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x))[0].numpy()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A work dir tuned once with TRIALS trials, and the progress reports it printed."""
    mod, x, expected = tiny_model()
    work_dir = tmp_path_factory.mktemp("tuned")
    events = []
    tune(mod, "x86", work_dir, TRIALS, progress=events.append, **FAST)
    return mod, x, expected, work_dir, events


@pytest.fixture
def copy(tuned, tmp_path):
    """A private copy of the tuned work dir, free to damage."""
    return Path(shutil.copytree(tuned[3], tmp_path / "db"))


def test_tuning_writes_records_metadata_and_progress(tuned):
    mod, _, _, work_dir, events = tuned
    assert len(records(work_dir)) == TRIALS + SEEDS
    meta = json.loads((work_dir / METADATA_FILE).read_text())
    assert meta["version"] == 1 and meta["tvm"] == tvm.__version__
    assert meta["target"] == target_fingerprint("x86")
    last = events[-1]
    assert (last.index, last.num_tasks) == (1, 1)
    assert last.name.startswith("fused_matmul")
    assert last.trials == last.total_trials == last.total_budget == TRIALS
    assert last.best_ms is not None and last.best_ms > 0


def test_spent_budget_tunes_nothing(tuned, copy, capsys):
    tune(tuned[0], "x86", copy, TRIALS, **FAST)  # default progress: prints on stderr
    assert len(records(copy)) == TRIALS + SEEDS
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert not out and len(lines) == 1  # the resumed state, then no batch
    assert lines[0].startswith("[tune 1/1 ") and "[fused_matmul" in lines[0]
    assert f"{TRIALS} trials" in lines[0] and f"({TRIALS}/{TRIALS} trials)" in lines[0]


def test_bigger_budget_spends_only_the_difference(tuned, copy):
    events = []
    tune(tuned[0], "x86", copy, 2 * TRIALS, progress=events.append, **FAST)
    assert len(records(copy)) == 2 * TRIALS + SEEDS
    assert [e.trials for e in events] == [TRIALS, 2 * TRIALS]  # resumed at TRIALS


def test_max_trials_per_task_caps_a_task(tuned, copy):
    tune(tuned[0], "x86", copy, 10 * TRIALS, max_trials_per_task=TRIALS, **FAST)
    assert len(records(copy)) == TRIALS + SEEDS  # the only task already has its TRIALS


def test_tuned_build_matches_untuned_numerics(tuned):
    mod, x, expected, work_dir, _ = tuned
    database = load_database(work_dir, "x86")  # a record only if one beat the default schedule
    assert database is not None and len(database) <= 1
    kernels = apply_database(legalize(mod, "x86"), "x86", database)
    scheduled = [f for _, f in kernels.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert sum(f.attrs.get("tirx.is_scheduled", False) for f in scheduled) == len(database)
    tuned_out, untuned_out = run(build(mod, "x86", database), x), run(build(mod, "x86"), x)
    np.testing.assert_allclose(tuned_out, untuned_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tuned_out, expected, rtol=1e-5, atol=1e-5)


def test_truncated_last_line_is_dropped_with_a_warning(tuned, copy):
    path = copy / RECORD_FILE
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:150])  # a record cut mid-write
    with pytest.warns(TuningDatabaseWarning, match="dropping its last line"):
        assert load_database(copy, "x86") is not None
    assert path.read_text() == whole  # repaired: TVM can append after it
    tune(tuned[0], "x86", copy, TRIALS, **FAST)  # and tuning opens it again


def test_corrupt_line_names_file_and_line(copy):
    path = copy / RECORD_FILE
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TuningDatabaseError, match=re.escape(f"{RECORD_FILE}, line 2: not valid")):
        load_database(copy, "x86")


def test_record_pointing_at_a_missing_workload_is_corrupt(copy):
    path = copy / RECORD_FILE
    entry = json.loads(path.read_text().splitlines()[0])
    entry[0] = 7
    path.write_text(json.dumps(entry) + "\n" + path.read_text())
    with pytest.raises(TuningDatabaseError, match="line 1: workload index 7"):
        load_database(copy, "x86")


def test_database_of_another_target_is_refused(tuned, copy):
    arm = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "num-cores": 4}
    with pytest.raises(TuningDatabaseError, match="another target"):
        load_database(copy, arm)
    with pytest.raises(TuningDatabaseError, match="another target"):
        tune(tuned[0], {"kind": "llvm", "num-cores": 1}, copy, TRIALS, **FAST)
    assert len(records(copy)) == TRIALS + SEEDS


def test_records_without_metadata_are_refused(copy):
    (copy / METADATA_FILE).unlink()
    with pytest.raises(TuningDatabaseError, match="no graphopt_tuning.json"):
        load_database(copy, "x86")


def test_zero_trials_stamps_the_dir_for_its_target(tmp_path):
    host_llvm = {"kind": "llvm"}  # num-cores is filled in, the same way when loading
    tune(tiny_model()[0], host_llvm, tmp_path, 0)
    assert not records(tmp_path)
    assert load_database(tmp_path, host_llvm) is None
    with pytest.raises(TuningDatabaseError, match="another target"):
        load_database(tmp_path, {"kind": "llvm", "num-cores": 64})


def test_nothing_to_load(tmp_path):
    assert load_database(tmp_path / "missing", "x86") is None
    assert load_database(tmp_path, "x86") is None


def test_busy_work_dir_is_refused(tuned, copy):
    with open(copy / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(TuningDatabaseError, match="in use"):
            tune(tuned[0], "x86", copy, TRIALS, **FAST)


def test_cross_targets_need_cores_and_a_remote_runner(tmp_path):
    mod = tiny_model()[0]
    with pytest.raises(TuningError, match="num-cores"):
        tune(mod, "arm", tmp_path, TRIALS)
    arm = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
    with pytest.raises(TuningError, match="RPCConfig"):
        tune(mod, arm, tmp_path, TRIALS)
    with pytest.raises(TuningError, match="runner"):
        tune(mod, "x86", tmp_path, TRIALS, runner="remote")
    assert not (tmp_path / METADATA_FILE).exists()


KILLED_RUN = """
import sys
from tests.test_tvm_tuning import tiny_model
from graphopt.backends.tvm.tuning import tune
tune(tiny_model()[0], "x86", sys.argv[1], {trials}, num_trials_per_iter={per_iter}, seed=0)
"""


@pytest.mark.slow
def test_sigkill_loses_no_finished_record(tmp_path):
    mod, x, expected = tiny_model()
    work_dir, per_iter = tmp_path / "db", 2
    script = textwrap.dedent(KILLED_RUN).format(trials=TRIALS, per_iter=per_iter)
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", script, str(work_dir)], cwd=root)
    try:
        deadline = time.monotonic() + 600
        while not ((work_dir / RECORD_FILE).exists() and len(records(work_dir)) >= SEEDS + per_iter):
            assert child.poll() is None, "the tuning run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    kept = len(records(work_dir)) - SEEDS
    assert per_iter <= kept < TRIALS
    events = []
    tune(mod, "x86", work_dir, TRIALS, progress=events.append, num_trials_per_iter=per_iter)
    assert events[0].trials == kept  # resumed from the killed run's records
    assert len(records(work_dir)) == TRIALS + SEEDS
    np.testing.assert_allclose(run(build(mod, "x86", load_database(work_dir, "x86")), x), expected, atol=1e-5)


@pytest.mark.slow
def test_tuning_through_an_rpc_tracker(tmp_path):
    rpc = pytest.importorskip("graphopt.backends.tvm.rpc")
    pytest.importorskip("tornado")
    tracker = rpc.start_tracker()
    server = rpc.start_local_server(tracker, key="graphopt-x86")
    try:
        rpc.wait_for_keys(tracker, ["graphopt-x86"])
        config = RPCConfig(tracker.host, tracker.port, "graphopt-x86")
        tune(tiny_model()[0], "x86", tmp_path, TRIALS, runner=config, **FAST)
    finally:
        server.terminate()
        tracker.terminate()
    entries = [json.loads(line) for line in records(tmp_path)]
    assert len(entries) == TRIALS + SEEDS
    run_secs = [sum(e[1][1]) / len(e[1][1]) for e in entries]
    assert min(run_secs) < 1.0  # measured remotely (failures are recorded as 1e10 s)
