"""Issue 12, item 5: `graphopt tune` killed with SIGKILL after some records were committed
resumes with no finished record lost.

The CLI runs as a real process on a one-layer model; once its database holds a
record it is killed (with its process group). Every complete record line of the
killed run must still be there, unchanged and first, after `graphopt tune` runs
again with the same budget, which spends only what is left.
(test_tvm_tuning.py kills the `tune` API; this kills the command a user runs.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import graphopt

pytest.importorskip("tvm")
from graphopt.backends.tvm.tuning import RECORD_FILE  # noqa: E402

pytestmark = pytest.mark.slow  # two TVM tuning processes: a minute or more on 2 cores
TRIALS = 4  # the default schedule's record first, then one batch of candidates
DEADLINE_S = 1800  # per run; a loaded 2-core machine needs minutes per batch


def complete_records(db: Path) -> list[str]:
    path = db / RECORD_FILE
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def tune_cmd(model: Path, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "graphopt",
        "tune",
        str(model),
        "--db",
        str(db),
        "--trials",
        str(TRIALS),
        "--target",
        "x86",
        "-p",
        "",
    ]


def test_killed_tune_resumes_without_losing_a_record(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "tiny.onnx"
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU()).eval()
    graphopt.trace(net, (torch.randn(4, 64),)).save_onnx(model)
    db = tmp_path / "db"
    child = subprocess.Popen(
        tune_cmd(model, db), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not complete_records(db):
            assert child.poll() is None, "the tuning run ended before it could be killed"
            assert time.monotonic() < deadline, "no record was committed in time"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()
    assert child.returncode == -signal.SIGKILL
    kept = complete_records(db)
    assert 1 <= len(kept) <= TRIALS

    resumed = subprocess.run(tune_cmd(model, db), capture_output=True, text=True, timeout=DEADLINE_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = complete_records(db)
    assert after[: len(kept)] == kept  # every finished record of the killed run, unchanged and first
    # as many as an uninterrupted run: the default schedule's record, then TRIALS measured candidates
    assert len(after) == TRIALS + 1
    assert f"({TRIALS}/{TRIALS} trials)" in resumed.stderr
    assert f"graphopt compile {model}" in resumed.stdout
