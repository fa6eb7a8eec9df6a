"""Reference runner: torch eager on an nn.Module, returning numpy outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.require(x, requirements="C"))


def flatten_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    flat: list[torch.Tensor] = []
    for o in out:
        flat.extend(flatten_outputs(o))
    return flat


def run_module(module: torch.nn.Module, inputs: Sequence) -> list[np.ndarray]:
    """Run `module` without gradients; nested outputs are flattened in order."""
    with torch.no_grad():
        out = module(*[to_tensor(x) for x in inputs])
    return [t.detach().cpu().numpy() for t in flatten_outputs(out)]
