"""CommitEachBatch: a tuning run writes each task's measurements before it tunes the next task.

MetaSchedule's own schedulers join measurements only when they come back to a
task, so through the first round over a model's kernels nothing reaches the
database file, and a run killed there loses all of it.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch
from torch import nn

from graphopt.backends.tvm.lower import lower_to_relax
from graphopt.backends.tvm.tuning import tune
from graphopt.backends.tvm.tuning_seed import read_seeds
from graphopt.frontends.fx import trace


@pytest.mark.slow
def test_first_task_is_on_disk_before_the_second_is_tuned(tmp_path):
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 24), nn.Tanh(), nn.Linear(24, 8)).eval()
    mod = lower_to_relax(trace(model, (torch.randn(2, 32),)))
    records = tmp_path / "database_tuning_record.json"
    log = tmp_path / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log"
    picks_at_first_record: list[int] = []
    done = threading.Event()

    def watch():  # how many tasks had been picked when the first tuned record reached the file
        while not done.is_set():
            seeded = len(read_seeds(tmp_path))  # the default schedules, recorded before tuning starts
            if seeded and records.exists() and len(records.read_text().splitlines()) > seeded:
                picks_at_first_record.append(len(re.findall("picks Task", log.read_text())))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        tune(mod, "x86", tmp_path, 9, progress=None)
    finally:
        done.set()
        watcher.join()
    assert len(re.findall("picks Task", log.read_text())) == 3  # three kernels, one round each
    assert picks_at_first_record and picks_at_first_record[0] <= 2
