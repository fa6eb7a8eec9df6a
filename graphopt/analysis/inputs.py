"""Seeded example inputs for a graph, from its input types.

Float inputs are standard normal; integer inputs feeding an embedding are drawn
from [0, rows) of the smallest table they index, other integers from [0, 2).
Symbolic dimensions are taken as 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


def _index_bound(graph: "Graph", name: str) -> int:
    bounds = [graph.type_of(n.inputs[1]).shape[0] for n in graph.users(name)
              if n.op == "embedding" and n.inputs[0] == name]
    return int(min(bounds)) if bounds else 2


def sample_inputs(graph: "Graph", seed: int = 0) -> list[np.ndarray]:
    """One set of inputs, in `graph.inputs` order, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for name in graph.inputs:
        t = graph.type_of(name)
        shape = tuple(d if isinstance(d, int) else 1 for d in t.shape)
        if t.dtype.startswith("float") or t.dtype == "bfloat16":
            out.append(rng.standard_normal(shape).astype("float32" if t.dtype == "bfloat16" else t.dtype))
        elif t.dtype == "bool":
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            out.append(rng.integers(0, _index_bound(graph, name), shape).astype(t.dtype))
    return out
