"""Shared test helpers.

- `interpret`: runs a Graph node by node through each op's torch reference
  (independent of the emitters), for hand-built graphs.
- `import_model`: a bundled model imported through either frontend, cached per
  session; every call returns a fresh copy of the graph, the model and its inputs.
- `run_checked`: run a pipeline with every instrument on; the input graph must be
  untouched and the result must verify.
- `same_outputs`: two graphs agree on a seeded input set the verifier did not see.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_support import _import, assert_same_outputs, run_checked_pipeline  # noqa: F401 (re-exported)

from graphopt.ir.ops import get_op


def interpret_graph(graph, inputs) -> list[np.ndarray]:
    env = {n: torch.from_numpy(np.asarray(a)) for n, a in zip(graph.inputs, inputs)}
    env.update({k: torch.from_numpy(np.array(p.data)) for k, p in graph.params.items()})
    with torch.no_grad():
        for node in graph.nodes:
            out = get_op(node.op).impl(*[env[v] for v in node.inputs], **node.attrs)
            env.update(zip(node.outputs, out if isinstance(out, (tuple, list)) else (out,)))
    return [env[o].numpy() for o in graph.outputs]


@pytest.fixture
def interpret():
    return interpret_graph


@pytest.fixture
def run_checked():
    return run_checked_pipeline


@pytest.fixture
def same_outputs():
    return assert_same_outputs


_IMPORTED: dict = {}


@pytest.fixture(scope="session")
def import_model():
    """import_model(frontend, name) -> (graph, model, example inputs as numpy arrays)."""
    from graphopt.models import get_model

    def load(frontend: str, name: str):
        key = (frontend, name)
        if key not in _IMPORTED:
            model, inputs = get_model(name)
            _IMPORTED[key] = _import(frontend, model, inputs)
        model, inputs = get_model(name)
        return _IMPORTED[key].copy(), model, [t.numpy() for t in inputs]

    return load
