"""Pruned graphs built with TVM (x86) compute what graph.run computes.

Kept apart from test_pass_prune.py so the TVM builds can be timed (and skipped) on their own.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_support import _import
from prune_structures import build

pytest.importorskip("tvm")

from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.passes import Pipeline  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

# one of each kind of coupling that changes an op's attributes when pruned:
# residual adds, grouped/depthwise conv groups, the shuffle reshapes, the head reshape, token mixing
STRUCTURES = [
    ("residual", "prune-channels"),
    ("grouped_depthwise", "prune-channels"),
    ("channel_shuffle", "prune-channels"),
    ("concat_split", "prune-channels"),
    ("token_mixer", "prune-channels"),
    ("attention_fused", "prune-heads"),
    ("attention_split", "prune-channels"),
]


def assert_tvm_matches(graph, inputs, pipeline: str) -> None:
    text = str(graph)
    pruned = Pipeline.parse(pipeline).run(graph).graph
    assert str(graph) == text
    pruned.verify()
    assert str(pruned) != text, f"{pipeline} changed nothing"
    compiled = compile_graph(pruned, "x86", pipeline=pipeline)
    got = compiled(*inputs)
    got = got if isinstance(got, (list, tuple)) else [got]
    ref = pruned.run(inputs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        scale = float(np.abs(r).max())
        np.testing.assert_allclose(np.asarray(g), r, rtol=1e-4, atol=1e-4 * min(1.0, max(scale, 1e-30)))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_small", "bert_small"])
def test_bundled_model_pruned_by_half_builds_with_tvm(import_model, name):
    graph, _, inputs = import_model("fx", name)
    assert_tvm_matches(graph, inputs, "prune-channels{ratio=0.5}")


def test_transformer_heads_and_ffn_pruned_build_with_tvm(import_model):
    graph, _, inputs = import_model("fx", "vit_small")
    assert_tvm_matches(graph, inputs, "prune-heads{ratio=0.5},prune-ffn{ratio=0.5}")


@pytest.mark.parametrize(
    "frontend,name,pass_name",
    [("fx", *s) for s in STRUCTURES]
    + [("onnx", "grouped_depthwise", "prune-channels"), ("onnx", "attention_fused", "prune-heads")],
)
def test_structure_pruned_builds_with_tvm(frontend, name, pass_name):
    model, x = build(name)
    assert_tvm_matches(_import(frontend, model, (x,)), [x.numpy()], f"{pass_name}{{ratio=0.5}}")
