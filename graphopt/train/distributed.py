"""Data-parallel training: one script runs as `python script.py` or under `torchrun --nproc_per_node=N`.

The script calls `init_distributed()` once at its entry point. That is the only
place the launcher's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) is read: without torchrun (WORLD_SIZE unset or 1) it returns a
single-process context and starts nothing; under torchrun it joins the process
group (gloo on CPU, nccl when CUDA is available; CUDA ranks use device
LOCAL_RANK). `train()` then follows the initialized process group, so the rest
of the script is the same in both modes.

Semantics (what makes N processes equal one process):
- Every rank iterates the same *global* batches; `shard_batch` gives rank r the
  r-th contiguous slice along dim 0 (sizes differ by at most one).
- DistributedDataParallel averages gradients over ranks. `shard_loss_scale`
  weights each rank's loss by N * b_r / B, so the averaged gradient equals the
  gradient of the single-process mean loss over the global batch, for equal and
  unequal shards alike (the loss must be a mean over samples, as torch's default
  reductions are).
- After training the parameters are broadcast from rank 0, so the graph written
  back is bit-identical on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from graphopt.errors import TrainError

__all__ = ["DistributedContext", "init_distributed", "current_context", "shutdown_distributed", "shard_batch"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: `world_size` ranks, this one is `rank`; `device` holds its tensors."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl"; None in a single process
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and saves."""
        return self.rank == 0


def init_distributed(backend: str | None = None, *, environ: Mapping[str, str] | None = None) -> DistributedContext:
    """Join torchrun's process group, or return a single-process context when not launched by torchrun.

    backend: "gloo" or "nccl"; default nccl when CUDA is available, else gloo.
    environ: the launcher's variables (default `os.environ`), read here and nowhere else.
    Calling it again in a process that already joined returns the same context.
    """
    env = os.environ if environ is None else environ
    world_size = _int_var(env, "WORLD_SIZE", 1)
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = _int_var(env, "RANK", 0), _int_var(env, "LOCAL_RANK", 0)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in ("gloo", "nccl"):
        raise TrainError(f"init_distributed: backend '{backend}' is not one of 'gloo', 'nccl'")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in env:
                raise TrainError(
                    f"init_distributed: WORLD_SIZE={world_size} but {var} is not set; launch with torchrun"
                )
        dist.init_process_group(backend, init_method="env://", world_size=world_size, rank=rank)
    return current_context()


def current_context() -> DistributedContext:
    """The context of the initialized default process group, or a single-process one (reads no environment)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    local_rank = device.index if device.type == "cuda" else dist.get_rank()
    return DistributedContext(dist.get_world_size(), dist.get_rank(), local_rank, backend, device)


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(batch, rank: int, world_size: int):
    """Rank `rank`'s contiguous slice (along dim 0) of every tensor in a nested tuple/list `batch`.

    Shard sizes differ by at most one (the first B % N ranks get one more), as `torch.tensor_split` cuts.
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            raise TrainError("shard_batch: a 0-d tensor has no batch dimension to split across ranks")
        return torch.tensor_split(batch, world_size)[rank]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(b, rank, world_size) for b in batch)
    raise TrainError(f"shard_batch: cannot split a {type(batch).__name__} across ranks; batches hold tensors")


def shard_loss_scale(shard_size: int, global_size: int, world_size: int) -> float:
    """Factor on a rank's mean loss so that DDP's gradient average equals the global mean's gradient."""
    return world_size * shard_size / global_size


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise TrainError(f"init_distributed: {name}={text!r} is not an integer") from None
