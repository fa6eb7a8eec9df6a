"""Data-parallel training: 2 CPU processes (gloo, torchrun) give what 1 process gives on the same global batches."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphopt.errors import TrainError
from graphopt.train import DistributedContext, init_distributed
from graphopt.train.distributed import shard_batch, shard_loss_scale

SCRIPT = Path(__file__).parent / "scripts" / "train_digits.py"
ROOT = Path(__file__).parent.parent


def _run(args: list[str], out_dir: Path) -> str:
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, *args, str(SCRIPT), str(out_dir)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_two_processes_match_one_process(tmp_path, capsys, monkeypatch):
    (tmp_path / "single").mkdir()  # one process: the same script, run here as `python script.py` would
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(tmp_path / "single")])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    single_log = capsys.readouterr().out
    # --standalone: a local rendezvous on a free port, so parallel runs do not collide
    ddp_log = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "ddp")
    one = np.load(tmp_path / "single" / "rank0.npz")
    rank0, rank1 = np.load(tmp_path / "ddp" / "rank0.npz"), np.load(tmp_path / "ddp" / "rank1.npz")
    assert sorted(one.files) == sorted(rank0.files) == sorted(rank1.files)
    for name in one.files:
        assert np.array_equal(rank0[name], rank1[name]), f"{name} differs between ranks"
        np.testing.assert_allclose(rank0[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    losses = one["losses"]
    assert len(losses) == 10 and losses[-1] < losses[0]  # it trained
    assert 0.45 < np.mean(rank0["body.0.weight"] == 0) < 0.55  # the mask held under DDP
    assert "[rank0] train: epoch 2/2" in ddp_log and "[rank1]" not in ddp_log  # only rank 0 logs
    assert single_log.count("[rank0] train: epoch") == 2


def test_init_distributed_without_torchrun_is_single_process():
    assert init_distributed(environ={}) == DistributedContext()
    assert init_distributed(environ={"WORLD_SIZE": "1", "RANK": "0"}).world_size == 1
    with pytest.raises(TrainError, match="WORLD_SIZE='two'"):
        init_distributed(environ={"WORLD_SIZE": "two"})
    with pytest.raises(TrainError, match="MASTER_ADDR is not set"):
        init_distributed("gloo", environ={"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(TrainError, match="backend 'mpi'"):
        init_distributed("mpi", environ={"WORLD_SIZE": "2"})


def test_shards_cover_the_batch_and_weights_restore_the_global_mean():
    import torch

    x, y = torch.arange(7.0).reshape(7, 1), torch.arange(7)
    shards = [shard_batch((x, y), r, 3) for r in range(3)]
    assert [len(s[1]) for s in shards] == [3, 2, 2]
    assert torch.equal(torch.cat([s[0] for s in shards]), x) and torch.equal(torch.cat([s[1] for s in shards]), y)
    # DDP averages rank gradients: mean over ranks of scale_r * mean_r == the mean over the global batch
    per_rank = [shard_loss_scale(len(s[1]), 7, 3) * s[0].mean() for s in shards]
    assert torch.isclose(sum(per_rank) / 3, x.mean())
    with pytest.raises(TrainError, match="cannot split a str"):
        shard_batch(("x",), 0, 2)
