"""`evaluate(graph, data, metric)`: a metric of `graph.to_torch()` over batches (the `train` data contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from graphopt.errors import TrainError
from graphopt.ir.graph import Graph
from graphopt.train.batches import batch_size, split_batch, to_device

__all__ = ["evaluate", "accuracy"]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of logits `outputs` (B, C) against class indices `targets` (B,)."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        got = f"shape {list(outputs.shape)}" if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise TrainError(f"accuracy needs one (batch, classes) output, got {got}")
    return (outputs.argmax(1) == targets).float().mean().item()


def evaluate(
    graph: Graph,
    data: Iterable,
    metric: str | Callable[[object, object], float] = "accuracy",
    *,
    impls=None,
    device: str | torch.device = "cpu",
) -> float:
    """The mean of `metric(outputs, targets)` over all samples of `data` (each batch weighted by its size).

    metric: "accuracy" or a callable returning the batch mean of a per-sample quantity.
    Runs in one process, without gradients; the graph is not modified.
    """
    if metric == "accuracy":
        metric = accuracy
    if not callable(metric):
        raise TrainError(f"evaluate: metric {metric!r} is not 'accuracy' or a callable (outputs, targets) -> float")
    device = torch.device(device)
    module = graph.to_torch(impls=impls).to(device).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for index, batch in enumerate(data):
            inputs, targets = split_batch(batch, index, graph.inputs)
            size = batch_size(inputs, index)
            outputs = module(*to_device(inputs, device))
            total += float(metric(outputs, to_device(targets, device))) * size
            count += size
    if count == 0:
        raise TrainError("evaluate: data yielded no samples")
    return total / count
