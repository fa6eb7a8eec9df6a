"""prune-magnitude: exact top-k masks (unstructured, N:M, blocks; per layer or global), masks only grow, schedules."""

from __future__ import annotations

import numpy as np
import pytest
from compression_support import (
    CE,
    accuracy,
    conv_net,
    digits,
    digits_batches,
    one_thread,  # noqa: F401  (autouse fixture)
    run_pass,
    second_run_is_unchanged,
    tiny_mlp,
)

from graphopt.analysis.params import count_params
from graphopt.errors import PassError, PipelineParseError
from graphopt.ir.encodings import Codebook
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.prune_magnitude import PruneMagnitude
from graphopt.train import iterative_prune, train

WEIGHTS = ("fc1.weight", "fc2.weight")


def prune(graph: Graph, **options):
    return PruneMagnitude(**options).run(graph, PassContext())


# ---- golden IR -----------------------------------------------------------------------


def test_golden_ir():
    g = tiny_mlp()
    out, record = run_pass(g, "prune-magnitude{sparsity=0.75}")
    assert (
        str(out.graph)
        == """\
graph tiny(%x: f32[2,8]) -> (%fc2)
  @fc1.weight: f32[8,8]  (sparsity=0.750)
  @fc1.bias: f32[8]
  @fc2.weight: f32[4,8]  (sparsity=0.750)
  %fc1: f32[2,8] = linear(%x, @fc1.weight, @fc1.bias)
  %relu: f32[2,8] = relu(%fc1)
  %fc2: f32[2,4] = linear(%relu, @fc2.weight)
  return %fc2"""
    )
    assert record.stats == {"layers": 2, "sparsity": 0.75, "per_layer": {"fc1.weight": 0.75, "fc2.weight": 0.75}}
    assert str(out.records[0].pass_) == "prune-magnitude{sparsity=0.75}"
    assert PruneMagnitude().tolerance().describe() == "unchecked"  # honest: 90% pruning bounds nothing


# ---- exact masks ---------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_unstructured_prunes_the_exact_count_of_smallest_magnitudes(sparsity):
    g = tiny_mlp()
    w = g.param("fc1.weight").data.copy()
    prune(g, sparsity=sparsity)
    mask = g.param("fc1.weight").mask
    pruned = int(np.floor(sparsity * w.size + 0.5)) if sparsity < 0.99 else w.size - 1  # a layer keeps one weight
    if mask is None:
        assert pruned == 0
        return
    assert np.count_nonzero(~mask) == pruned
    assert np.abs(w[~mask]).max(initial=0) <= np.abs(w[mask]).min()
    np.testing.assert_array_equal(g.param("fc1.weight").data, np.where(mask, w, 0))
    assert "fc1.bias" not in {n for n, p in g.params.items() if p.mask is not None}  # biases are not targets


def test_ties_go_by_position():
    g = tiny_mlp()
    g.set_param("fc2.weight", np.ones((4, 8), np.float32))
    prune(g, sparsity=0.25)
    expected = np.ones(32, bool)
    expected[:8] = False  # equal magnitudes: the first in row-major order go first
    np.testing.assert_array_equal(g.param("fc2.weight").mask.reshape(-1), expected)


def test_global_scope_ranks_every_weight_together():
    g = tiny_mlp()
    g.set_param("fc2.weight", g.param("fc2.weight").data * 10)  # fc2 is far larger: fc1 goes first
    both = np.concatenate([np.abs(g.param(n).data).reshape(-1) for n in WEIGHTS])
    threshold = np.sort(both)[47]
    record = prune(g, sparsity=0.5, scope="global")
    assert record.stats["sparsity"] == 0.5 and sum(np.count_nonzero(~g.param(n).mask) for n in WEIGHTS) == 48
    for n in WEIGHTS:
        p = g.param(n)
        assert np.all(np.abs(p.data[p.mask]) > threshold)
    assert record.stats["per_layer"]["fc1.weight"] > 0.7 > record.stats["per_layer"]["fc2.weight"]


def test_two_of_four_along_input_channels():
    g = conv_net()
    w = g.param("c1.weight").data.copy()
    record = prune(g, pattern="2:4")
    assert record.stats["sparsity"] == 0.5
    keep = g.param("c1.weight").mask
    groups = np.moveaxis(np.abs(w), 1, -1).reshape(8, 3, 3, 2, 4)  # 4 consecutive input channels per kernel tap
    kept = np.moveaxis(keep, 1, -1).reshape(groups.shape)
    assert np.all(kept.sum(-1) == 2)
    assert np.all(np.where(kept, groups, np.inf).min(-1) >= np.where(kept, -np.inf, groups).max(-1))
    assert g.param("c2.weight").mask.reshape(4, 2, 4).sum(-1).tolist() == [[2, 2]] * 4


def test_n_of_m_skips_a_reduction_axis_of_the_wrong_length():
    g = conv_net(cin=3)
    record = prune(g, pattern="2:4")
    assert record.stats["skipped"] == {"c1.weight": "reduction axis 1 has length 3, not a multiple of 4"}
    assert g.param("c1.weight").mask is None and g.param("c2.weight").sparsity == 0.5
    assert prune(g, pattern="1:3").stats["per_layer"] == {"c1.weight": pytest.approx(2 / 3, abs=1e-4)}


def test_matmul_weight_groups_run_along_k():
    g = Graph("mm")
    x = g.add_input("x", TensorType((2, 8)))
    b = g.add_param("b", np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    g.set_outputs([g.add_node("matmul", [x, b], name="mm").output])
    prune(g, pattern="2:4")
    assert np.all(g.param("b").mask.reshape(2, 4, 3).sum(1) == 2)  # K is axis 0 of B [K, N]


def test_blocks_are_whole_and_lowest_by_mean_magnitude():
    g = conv_net()
    w = g.param("c1.weight").data.copy()
    record = prune(g, pattern="block", block=4, sparsity=0.5)
    mask = g.param("c1.weight").mask
    view = np.moveaxis(mask, 1, -1).reshape(8, 72)  # [outputs, (kh, kw, in)]: 2 x 18 blocks of 4x4
    tiles = view.reshape(2, 4, 18, 4).transpose(0, 2, 1, 3).reshape(36, 16)
    assert set(tiles.sum(1).tolist()) == {0, 16} and (tiles.sum(1) == 0).sum() == 18
    scores = np.abs(np.moveaxis(w, 1, -1).reshape(8, 72)).reshape(2, 4, 18, 4).transpose(0, 2, 1, 3).reshape(36, 16)
    assert scores[tiles[:, 0] == 0].mean(1).max() <= scores[tiles[:, 0] == 1].mean(1).min()
    assert record.stats["per_layer"]["c1.weight"] == 0.5


def test_masks_only_grow_and_schedules_compose():
    g = tiny_mlp()
    prune(g, sparsity=0.5)
    first = {n: g.param(n).mask.copy() for n in WEIGHTS}
    assert not prune(g, sparsity=0.3).changed  # already sparser: left as it is
    prune(g, sparsity=0.75)
    for n in WEIGHTS:
        assert not np.any(g.param(n).mask & ~first[n])  # nothing pruned came back
        assert g.param(n).sparsity == 0.75
    step = PruneMagnitude(scope="global").as_prune_step()
    seen = []
    out = iterative_prune(tiny_mlp(), step, lambda h: seen.append(h.params["fc1.weight"].mask.copy()) or h,
                          final_ratio=0.9, steps=3, log=None)  # fmt: skip
    assert all(not np.any(later & ~earlier) for earlier, later in zip(seen, seen[1:]))
    assert sum(np.count_nonzero(~out.params[n].mask) for n in WEIGHTS) == round(0.9 * 96)
    with pytest.raises(ValueError, match="fixed sparsity"):
        PruneMagnitude(pattern="2:4").as_prune_step()


def test_include_ignore_and_encoded_weights():
    g = tiny_mlp()
    record = prune(g, sparsity=0.5, include=("bias",), ignore=("fc2",))
    assert set(record.stats["per_layer"]) == {"fc1.weight", "fc1.bias"} and g.param("fc2.weight").mask is None
    h = tiny_mlp()
    h.set_encoding("fc2.weight", Codebook(np.array([0.5], np.float32), np.zeros((4, 8), np.int64)))
    record = prune(h, sparsity=0.5)
    assert "fc2.weight" in record.stats["skipped"] and h.param("fc2.weight").mask is None
    with pytest.raises(PassError, match="ignore names no node or parameter of graph 'tiny': nope"):
        prune(tiny_mlp(), ignore=("nope",))


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("prune-magnitude{sparsity=1.0}", "sparsity must lie in \\[0, 1\\), got 1.0"),
        ("prune-magnitude{sparsity=-0.1}", "sparsity must lie in"),
        ("prune-magnitude{pattern=diagonal}", "unknown pattern 'diagonal'; known: unstructured | N:M"),
        ("prune-magnitude{pattern=4:2}", "unknown pattern '4:2'"),
        ("prune-magnitude{pattern=2:4 sparsity=0.9}", "pattern 2:4 prunes exactly 0.5; sparsity=0.9 contradicts"),
        ("prune-magnitude{pattern=2:4 scope=global}", "scope=global does not apply"),
        ("prune-magnitude{pattern=block block=0}", "block must be >= 1"),
        ("prune-magnitude{include=[heads]}", "include 'heads' is not one of bias, norm, embedding"),
        ("prune-magnitude{scope=model}", "option 'scope' of pass 'prune-magnitude' expects one of layer|global"),
    ],
)
def test_bad_options_are_named(text, message):
    with pytest.raises(PipelineParseError, match=message):
        Pipeline.parse(text)


# ---- both frontends and real data --------------------------------------------------------------


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "block"])
def test_digits_models_on_both_frontends(frontend, pattern):
    for kind in ("mlp", "cnn"):
        g = digits(kind, frontend)
        text = f"prune-magnitude{{pattern={pattern}}}"
        out, record = run_pass(g, text)
        weights = [n for n, p in out.graph.params.items() if p.mask is not None]
        assert len(weights) == (3 if kind == "mlp" else 4 - (pattern == "2:4"))  # the 1-channel conv is skipped
        assert all(out.graph.params[n].sparsity == pytest.approx(0.5, abs=0.02) for n in weights)
        assert count_params(out.graph).nbytes == count_params(g).nbytes  # masks alone: storage is a writer's choice
        second_run_is_unchanged(out.graph, text)


@pytest.mark.parametrize("kind, options", [("mlp", "sparsity=0.9"), ("cnn", "sparsity=0.9 scope=global")])
def test_ninety_percent_sparse_digits_fine_tune_back_to_float(kind, options):
    g = digits(kind, "fx")
    base = accuracy(g, kind)
    pruned = Pipeline.parse(f"prune-magnitude{{{options}}}").run(g).graph
    tuned = train(pruned, digits_batches(kind)[0], CE, epochs=10, optimizer="adam", lr=3e-3, log=None).graph
    weights = [n for n, p in tuned.params.items() if p.mask is not None]
    sparsity = sum((~tuned.params[n].mask).sum() for n in weights) / sum(tuned.params[n].data.size for n in weights)
    nonzero_bytes = sum(4 * int(tuned.params[n].mask.sum()) for n in weights)
    dense_bytes = sum(tuned.params[n].data.nbytes for n in weights)
    one_shot, after = accuracy(pruned, kind), accuracy(tuned, kind)
    print(
        f"\n{kind} prune-magnitude{{{options}}}: float {base:.4f}, pruned {one_shot:.4f}, fine-tuned {after:.4f}; "
        f"sparsity {sparsity:.3f}, weights {dense_bytes} B dense, {nonzero_bytes} B of nonzeros; "
        f"count_params {count_params(tuned).nbytes} B"
    )
    assert sparsity == pytest.approx(0.9, abs=1e-3)
    assert all(np.all(tuned.params[n].data[~tuned.params[n].mask] == 0) for n in weights)
    assert one_shot < base - 0.3 and after >= base - 0.02, (base, one_shot, after)


def test_threshold_form_prunes_every_weight_below_it():
    g = Graph("thr")
    x = g.add_input("x", TensorType((2, 4)))
    w = np.array([[0.1, -0.5, 0.05, 2.0], [-0.3, 0.2, 1.0, -0.01]], dtype=np.float32)
    g.set_outputs([g.add_node("linear", [x, g.add_param("fc.weight", w)], name="fc").output])
    out = Pipeline.parse("prune-magnitude{threshold=0.25}").run(g).graph
    assert out.params["fc.weight"].mask.tolist() == (np.abs(w) >= 0.25).tolist()
    everything = Pipeline.parse("prune-magnitude{threshold=10}").run(g).graph
    assert int(everything.params["fc.weight"].mask.sum()) == 1  # a layer keeps its largest weight
    with pytest.raises(ValueError, match="threshold"):
        PruneMagnitude(threshold=-1.0)
    with pytest.raises(ValueError, match="threshold does not apply"):
        PruneMagnitude(threshold=0.1, pattern="2:4")
