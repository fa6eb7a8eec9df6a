"""The data contract shared by `train` and `evaluate`.

`data` is an iterable of batches, iterated once per epoch (a list of batches or
a `torch.utils.data.DataLoader`; a one-shot iterator serves one pass only).
Each batch is a pair `(inputs, targets)`:
- `inputs`: one tensor for a graph with one input, else a tuple/list of tensors
  in `graph.inputs` order; dim 0 is the batch dimension;
- `targets`: a tensor or a tuple/list of tensors (dim 0 the batch), handed to
  the loss or metric as given.
Numpy arrays are accepted wherever tensors are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from graphopt.errors import TrainError

__all__ = ["split_batch", "to_device", "batch_size"]


def split_batch(batch, index: int, input_names: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], object]:
    """`(inputs, targets)` of batch number `index` as (tuple of tensors, targets), checked against the inputs."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TrainError(f"batch {index}: expected a pair (inputs, targets), got {got}")
    inputs, targets = batch
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if len(inputs) != len(input_names):
        raise TrainError(
            f"batch {index}: {len(inputs)} input tensor(s) for a graph with inputs {list(input_names)} "
            f"(pass a tuple in graph.inputs order)"
        )
    return tuple(_tensor(x, index, f"input '{n}'") for n, x in zip(input_names, inputs)), _targets(targets, index)


def to_device(tree, device: torch.device):
    """Every tensor of a nested tuple/list moved to `device` (other leaves as they are)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_device(x, device) for x in tree)
    return tree


def batch_size(inputs: Sequence[torch.Tensor], index: int) -> int:
    """The common dim 0 of the inputs; a disagreement is an error naming the batch."""
    sizes = {x.shape[0] if x.dim() else None for x in inputs}
    if len(sizes) != 1 or None in sizes:
        raise TrainError(
            f"batch {index}: inputs must share a batch dimension (dim 0), got sizes {sorted(map(str, sizes))}"
        )
    return sizes.pop()


def _targets(targets, index: int):
    if isinstance(targets, (tuple, list)):
        return type(targets)(_tensor(t, index, "target") for t in targets)
    return _tensor(targets, index, "target")


def _tensor(x, index: int, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TrainError(f"batch {index}: {what} is a {type(x).__name__}, not a tensor or numpy array")
