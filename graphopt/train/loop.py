"""One training loop for every training-time step: fine-tuning now, QAT (`impls`) and distillation (`teacher`) next.

`train(graph, data, loss_fn)` trains `graph.to_torch()` and returns a *new*
graph holding the trained weights; the caller's graph is never modified (it is
copied, and the copy is written back through `set_param`).

What stays fixed while training:
- masks: pruned entries stay zero. Their gradients are zeroed before every
  optimizer step (so momentum and Adam moments never see them) and the mask is
  re-applied after it (so weight decay or a custom optimizer cannot revive
  them); `set_param` keeps the mask on write-back.
- frozen parameters (`trainable=False`, integer parameters): they are buffers
  in `to_torch()`, never handed to the optimizer, never written back. A
  trained parameter loses its encoding (it described the old data); freeze a
  parameter to keep its encoding.
- BatchNorm statistics: the IR's `batch_norm` is the inference form, so running
  mean and variance are frozen (they are frozen parameters) and its output does
  not depend on the rest of the batch: the usual setting for fine-tuning a
  compressed model, and what makes a sharded batch give the same gradient.

Data: see `graphopt.train.batches` (each batch is `(inputs, targets)`).
Loss: `loss_fn(outputs, targets)` returns a scalar tensor, the *mean* over the
batch (torch's default reductions); `outputs` is what the module returns (one
tensor for one graph output, else a tuple). With `teacher=`, the loss is called
as `loss_fn(outputs, targets, teacher_outputs)`.

Distributed: when a process group is initialized (`init_distributed()` under
torchrun), the module is wrapped in DistributedDataParallel and each global
batch is split across ranks (`distributed.py`); the result equals one process
training on the same global batches, and only rank 0 logs.

Progress: a `graphopt.progress` bar over the steps (label train, qat or
distill) on a terminal; `log` lines are independent of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from graphopt.emit.torch import write_back
from graphopt.errors import TrainError
from graphopt.ir.graph import Graph
from graphopt.progress import progress_bar
from graphopt.train.batches import batch_size, split_batch, to_device
from graphopt.train.distributed import DistributedContext, current_context, shard_batch, shard_loss_scale

__all__ = ["train", "TrainResult"]

_DEFAULT_LR = {"sgd": 1e-2, "adam": 1e-3}
_END = object()


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns: the new graph, the loss of every step and of every epoch, and the time taken."""

    graph: Graph
    losses: tuple[float, ...]  # the global-batch mean loss of each step
    epoch_losses: tuple[float, ...]  # mean of the step losses of each pass over the data
    steps: int
    seconds: float
    written: tuple[str, ...]  # the parameters written back


def train(
    graph: Graph,
    data: Iterable,
    loss_fn: Callable[..., torch.Tensor],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: str | Callable[[list[nn.Parameter]], torch.optim.Optimizer] = "sgd",
    lr: float | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    log: Callable[[str], object] | None = print,
    log_every: int | None = None,
    impls: Mapping[str, Callable] | None = None,
    teacher: Graph | nn.Module | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train `graph.to_torch(impls=impls)` on `data` with `loss_fn`; return a new graph with the trained weights.

    `graph` itself is never modified: the trained weights go into a copy (`TrainResult.graph`).
    Under torchrun, call `init_distributed()` first; `train` follows the initialized process group.
    epochs / steps: `epochs` passes over `data`; `steps` caps the optimizer steps
    (with `steps` alone, `data` is cycled until that many steps are done);
    neither given: one epoch.
    optimizer: "sgd" (lr default 1e-2, `momentum`, `weight_decay`), "adam" (lr
    default 1e-3, `weight_decay`), or a callable taking the list of trainable
    parameters and returning a `torch.optim.Optimizer` (lr and friends unused).
    seed: seeds torch's RNG for the run (the global RNG state is restored after).
    log: called with one line per epoch (and every `log_every` steps); None is silent.
    impls: op name -> torch function replacing that op's reference (QAT's fake quantization).
    teacher: a graph or module whose outputs on the same inputs are passed to the loss (distillation).
    device: where to train; default CPU, or the rank's GPU under an nccl process group.
    """
    _check_options(loss_fn, epochs, steps, log_every, optimizer, momentum)
    ctx = current_context()
    device = torch.device(device) if device is not None else ctx.device
    result = graph.copy()
    module = result.to_torch(impls=impls)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainError(f"graph '{graph.name}' has no trainable float parameters; nothing to train")
    module.to(device).train()
    masks = _masks(result, module, device)
    opt = _optimizer(optimizer, params, lr, momentum, weight_decay)
    teacher_module = _teacher(teacher, device)
    model = _wrap(module, ctx, device)
    loop = _Loop(model, result, loss_fn, opt, masks, teacher_module, ctx, device, log if ctx.is_main else None)
    start = time.perf_counter()
    label = "distill" if teacher is not None else "qat" if impls else "train"
    with (
        _step_bar(data, epochs, steps, label, ctx.is_main) as loop.bar,
        torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []),
    ):
        torch.manual_seed(seed)
        loop.run(data, epochs, steps, log_every)
    if ctx.is_distributed:
        for p in module.parameters():  # identical on every rank, bit for bit
            dist.broadcast(p.data, src=0)
    written = write_back(result, module)
    return TrainResult(
        result, tuple(loop.losses), tuple(loop.epoch_losses), loop.step, time.perf_counter() - start, tuple(written)
    )


class _Loop:
    """The epoch and step loop of one `train` call (its state: step count and losses)."""

    def __init__(self, model, graph, loss_fn, opt, masks, teacher, ctx: DistributedContext, device, log):
        self.model, self.graph, self.loss_fn, self.opt = model, graph, loss_fn, opt
        self.masks, self.teacher, self.ctx, self.device, self.log = masks, teacher, ctx, device, log
        self.step = 0
        self.losses: list[float] = []
        self.epoch_losses: list[float] = []
        self.bar = None  # a graphopt.progress bar over the optimizer steps

    def run(self, data: Iterable, epochs: int | None, steps: int | None, log_every: int | None) -> None:
        epochs = 1 if epochs is None and steps is None else epochs
        epoch = 0
        while (epochs is None or epoch < epochs) and (steps is None or self.step < steps):
            started, first = time.perf_counter(), self.step
            batches = iter(data)
            if epoch > 0 and batches is data:
                raise TrainError(
                    f"data is a one-shot iterator ({type(data).__name__}) but training needs pass {epoch + 1}; "
                    f"pass a list of batches or a DataLoader"
                )
            index = 0
            while steps is None or self.step < steps:
                batch = next(batches, _END)
                if self.ctx.is_distributed:
                    self._agree(batch, index)
                if batch is _END:
                    break
                self._step(batch, index)
                index += 1
                if self.log and log_every and self.step % log_every == 0:
                    self.log(f"train: step {self.step}: loss {self.losses[-1]:.4f}")
            if index == 0:
                where = "" if epoch == 0 else f" in pass {epoch + 1}"
                raise TrainError(f"data yielded no batches{where}; nothing to train on")
            epoch += 1
            self.epoch_losses.append(sum(self.losses[first:]) / (self.step - first))
            if self.log:
                total = f"/{epochs}" if epochs is not None else ""
                self.log(
                    f"train: epoch {epoch}{total}: loss {self.epoch_losses[-1]:.4f} "
                    f"({self.step - first} steps, {time.perf_counter() - started:.1f} s)"
                )

    def _step(self, batch, index: int) -> None:
        inputs, targets = split_batch(batch, index, self.graph.inputs)
        size = batch_size(inputs, index)
        scale = 1.0
        if self.ctx.is_distributed:
            if size < self.ctx.world_size:
                raise TrainError(f"batch {index}: {size} samples cannot be split across {self.ctx.world_size} ranks")
            inputs = shard_batch(inputs, self.ctx.rank, self.ctx.world_size)
            targets = shard_batch(targets, self.ctx.rank, self.ctx.world_size)
            scale = shard_loss_scale(inputs[0].shape[0], size, self.ctx.world_size)
        inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
        outputs = self.model(*inputs)
        if self.teacher is None:
            loss = self.loss_fn(outputs, targets)
        else:
            with torch.no_grad():
                teacher_outputs = self.teacher(*inputs)
            loss = self.loss_fn(outputs, targets, teacher_outputs)
        self._check_loss(loss, index)
        self.opt.zero_grad(set_to_none=True)
        (loss * scale if scale != 1.0 else loss).backward()
        with torch.no_grad():
            for p, mask in self.masks:
                if p.grad is not None:
                    p.grad.mul_(mask)
            self.opt.step()
            for p, mask in self.masks:
                p.mul_(mask)
        value = loss.detach() * (scale / self.ctx.world_size)
        if self.ctx.is_distributed:
            dist.all_reduce(value)  # the global-batch mean, the same on every rank
        value = float(value)
        if not math.isfinite(value):
            raise TrainError(f"step {self.step + 1} (batch {index}): the loss is {value}; lower the learning rate")
        self.losses.append(value)
        self.step += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {value:.4f}", refresh=False)
            self.bar.update()

    def _check_loss(self, loss, index: int) -> None:
        name = getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = f"shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TrainError(f"batch {index}: loss_fn {name} must return a scalar tensor (the batch mean), got {got}")
        if not loss.requires_grad:
            raise TrainError(f"batch {index}: the loss of loss_fn {name} does not depend on the trainable parameters")

    def _agree(self, batch, index: int) -> None:
        """All ranks have a batch (of one size) or all are done; anything else is an error, not a hang."""
        has = batch is not _END
        size = batch_size(split_batch(batch, index, self.graph.inputs)[0], index) if has else 0
        both = torch.tensor([has, -has, size, -size], dtype=torch.float64, device=self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if both[0] != -both[1] or both[2] != -both[3]:
            raise TrainError(
                f"rank {self.ctx.rank}, batch {index}: ranks disagree on the data (a batch here: {has}, "
                f"size {size}); every rank must iterate the same global batches"
            )


def _step_bar(data, epochs: int | None, steps: int | None, label: str, main: bool):
    """A progress bar over the optimizer steps to come (only rank 0 shows one)."""
    if epochs is None and steps is None:
        epochs = 1
    total = steps  # with steps alone, the data is cycled until that many
    if epochs is not None and hasattr(data, "__len__"):
        total = len(data) * epochs if steps is None else min(steps, len(data) * epochs)
    return progress_bar(total=total, desc=label, unit="step", enabled=main)


def _check_options(loss_fn, epochs, steps, log_every, optimizer, momentum) -> None:
    if not callable(loss_fn):
        raise TrainError(f"loss_fn must be callable (outputs, targets) -> scalar tensor, got {type(loss_fn).__name__}")
    for name, v in (("epochs", epochs), ("steps", steps), ("log_every", log_every)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise TrainError(f"train: {name} must be a positive integer, got {v!r}")
    if not callable(optimizer) and optimizer not in _DEFAULT_LR:
        raise TrainError(f"train: optimizer {optimizer!r} is not one of {sorted(_DEFAULT_LR)} or a callable")
    if optimizer == "adam" and momentum:
        raise TrainError("train: momentum is an SGD option (adam's moments are its betas)")


def _optimizer(spec, params: list[nn.Parameter], lr, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if callable(spec):
        opt = spec(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TrainError(f"train: the optimizer callable returned a {type(opt).__name__}, not a torch Optimizer")
        return opt
    lr = _DEFAULT_LR[spec] if lr is None else lr
    if not lr > 0:
        raise TrainError(f"train: lr must be positive, got {lr!r}")
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _masks(graph: Graph, module: nn.Module, device: torch.device) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, float mask) for every trainable parameter that carries a mask."""
    out = []
    for name, attr in module.param_names.items():
        p, tensor = graph.params[name], getattr(module, attr, None)
        if p.mask is not None and isinstance(tensor, nn.Parameter):
            out.append((tensor, torch.from_numpy(p.mask.copy()).to(device=device, dtype=tensor.dtype)))
    return out


def _teacher(teacher, device: torch.device) -> nn.Module | None:
    """A graph teacher becomes a module on `device`; a module is used as given (mode and device are the caller's)."""
    if teacher is None or isinstance(teacher, Graph):
        return None if teacher is None else teacher.to_torch().to(device).eval().requires_grad_(False)
    if not isinstance(teacher, nn.Module):
        raise TrainError(f"train: teacher must be a Graph or an nn.Module, got {type(teacher).__name__}")
    return teacher


def _wrap(module: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    if not ctx.is_distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)
