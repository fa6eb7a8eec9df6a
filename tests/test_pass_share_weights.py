"""share-weights: k-means codebooks (Lloyd fixed point, zero kept for masks, global scope) and centroid fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compression_support import (
    CE,
    accuracy,
    digits,
    digits_batches,
    one_thread,  # noqa: F401  (autouse fixture)
    run_pass,
    second_run_is_unchanged,
    stored_bytes,
    tiny_mlp,
)

from graphopt.analysis.params import count_params
from graphopt.errors import PassError, PipelineParseError, TrainError
from graphopt.ir.encodings import Codebook
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.share_weights import ShareWeights
from graphopt.quant.kmeans import kmeans_1d
from graphopt.train import evaluate, finetune_shared, train

WEIGHTS = ("fc1.weight", "fc2.weight")


def test_golden_ir():
    g = tiny_mlp()
    out, record = run_pass(g, "share-weights{clusters=4}")
    assert (
        str(out.graph)
        == """\
graph tiny(%x: f32[2,8]) -> (%fc2)
  @fc1.weight: f32[8,8]  (encoding=codebook(k=4, 2-bit indices))
  @fc1.bias: f32[8]
  @fc2.weight: f32[4,8]  (encoding=codebook(k=4, 2-bit indices))
  %fc1: f32[2,8] = linear(%x, @fc1.weight, @fc1.bias)
  %relu: f32[2,8] = relu(%fc1)
  %fc2: f32[2,4] = linear(%relu, @fc2.weight)
  return %fc2"""
    )
    assert record.stats["layers"] == 2 and record.stats["bits"] == 2
    assert record.stats["bytes"] == f"{96 * 4}->{2 * 4 * 4 + (64 + 32) // 4}"  # centroids + 2-bit indices
    assert ShareWeights(clusters=16).tolerance().describe() == "SQNR>=8.1 dB"
    assert ShareWeights(clusters=4).tolerance().describe() == "unchecked"


def test_codebook_is_a_lloyd_fixed_point():
    g = tiny_mlp()
    w = g.param("fc1.weight").data.copy()
    ShareWeights(clusters=4).run(g, PassContext())
    book = g.param("fc1.weight").encoding
    assert isinstance(book, Codebook) and book.centroids.dtype == np.float32
    np.testing.assert_array_equal(g.param("fc1.weight").data, book.centroids[book.indices])
    assert np.unique(g.param("fc1.weight").data).size == 4
    for k in range(4):  # each centroid is the mean of its weights, each weight takes its nearest centroid
        assert book.centroids[k] == pytest.approx(w[book.indices == k].mean(), abs=1e-6)
    nearest = np.abs(w[..., None] - book.centroids.astype(np.float64)).argmin(-1)
    np.testing.assert_array_equal(nearest, book.indices)


def test_kmeans_inits_and_determinism():
    x = np.random.default_rng(3).standard_normal(5000)
    for init in ("linear", "quantile", "kmeans++"):
        c1, l1 = kmeans_1d(x, 8, init=init, seed=1)
        c2, l2 = kmeans_1d(x, 8, init=init, seed=1)
        assert np.array_equal(c1, c2) and np.array_equal(l1, l2) and np.all(np.diff(c1) > 0)
        sse = ((x - c1[l1]) ** 2).sum()
        assert sse < 0.04 * (x**2).sum()  # 8 levels of a Gaussian: Lloyd-Max leaves ~3.5% of the energy
    c, labels = kmeans_1d(np.array([0.0, 0.0, 1.0, 5.0, 5.0]), 4)
    assert c.tolist() == [0.0, 1.0, 5.0] and labels.tolist() == [0, 0, 1, 2, 2]  # fewer distinct values than k


def test_pruned_zeros_get_a_fixed_zero_centroid():
    g = tiny_mlp()
    pruned = Pipeline.parse("prune-magnitude{sparsity=0.75},share-weights{clusters=4}").run(g).graph
    p = pruned.param("fc1.weight")
    assert p.encoding.centroids[0] == 0.0 and np.all(p.encoding.indices[~p.mask] == 0)
    assert np.all(p.encoding.indices[p.mask] > 0)  # the kept weights share the other 3
    assert p.sparsity == 0.75 and np.unique(p.data).size == 4


def test_global_scope_shares_one_codebook():
    g = tiny_mlp()
    record = ShareWeights(clusters=8, scope="global").run(g, PassContext())
    a, b = (g.param(n).encoding.centroids for n in WEIGHTS)
    assert np.array_equal(a, b) and record.stats["layers"] == 2
    assert len(set(np.unique(g.param("fc1.weight").data)) | set(np.unique(g.param("fc2.weight").data))) <= 8


def test_clusters_above_a_layers_weight_count_is_an_error_naming_it():
    with pytest.raises(PassError, match=r"parameter 'fc2.weight' \(linear 'fc2'\) has 32 weights, fewer than the 40"):
        ShareWeights(clusters=40).run(tiny_mlp(), PassContext())


@pytest.mark.parametrize(
    "text, message",
    [
        ("share-weights{clusters=1}", "clusters must be >= 2, got 1"),
        ("share-weights{clusters=0}", "clusters must be >= 2, got 0"),
        ("share-weights{init=random}", "option 'init' of pass 'share-weights' expects one of linear|quantile|kmeans"),
        ("share-weights{scope=channel}", "expects one of layer|global"),
        ("share-weights{iterations=0}", "iterations must be >= 1"),
    ],
)
def test_bad_options_are_named(text, message):
    with pytest.raises(PipelineParseError, match=message):
        Pipeline.parse(text)


# ---- centroid fine-tuning --------------------------------------------------------------------------


def test_finetune_shared_keeps_k_values_sums_gradients_and_keeps_zeros():
    g = digits("mlp", "fx")
    shared = Pipeline.parse("prune-magnitude{sparsity=0.5},share-weights{clusters=8}").run(g).graph
    train_b, test_b = digits_batches("mlp")
    result = finetune_shared(shared, train_b, CE, epochs=2, optimizer="adam", lr=1e-3, log=None)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    for name in ("body.0.weight", "body.3.weight", "fc.weight"):
        before, after = shared.params[name], result.graph.params[name]
        assert isinstance(after.encoding, Codebook) and np.unique(after.data).size == 8
        np.testing.assert_array_equal(after.encoding.indices, before.encoding.indices)
        assert after.encoding.centroids[0] == 0.0 and np.array_equal(after.mask, before.mask)
        assert not np.array_equal(after.encoding.centroids, before.encoding.centroids)  # they trained
    assert not np.array_equal(result.graph.params["fc.bias"].data, shared.params["fc.bias"].data)
    result.graph.verify()
    assert evaluate(result.graph, test_b) >= evaluate(shared, test_b) - 0.01


def test_one_sgd_step_moves_each_centroid_by_its_summed_gradient():
    g = tiny_mlp()
    ShareWeights(clusters=4).run(g, PassContext())
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 3])
    module = g.to_torch()
    CE(module(x), target).backward()
    grad = module.get_parameter(module.param_names["fc1.weight"]).grad.numpy()
    book = g.param("fc1.weight").encoding
    summed = np.array([grad[book.indices == k].sum() for k in range(4)])
    out = finetune_shared(g, [(x, target)], CE, optimizer="sgd", lr=0.1, log=None).graph
    np.testing.assert_allclose(out.param("fc1.weight").encoding.centroids, book.centroids - 0.1 * summed, rtol=1e-5)


def test_finetune_shared_when_module_order_differs_from_graph_order():
    """fold-bn adds conv biases last; the fx module orders its parameters by first use."""
    g = Pipeline.parse("fold-bn,share-weights{clusters=4}").run(digits("cnn", "fx")).graph
    assert list(g.params).index("features.0.bias") > list(g.params).index("fc.weight")
    out = finetune_shared(g, digits_batches("cnn")[0][:3], CE, optimizer="sgd", lr=0.05, log=None).graph
    for name in ("features.0.weight", "features.3.weight", "features.7.weight", "fc.weight"):
        assert np.unique(out.params[name].data).size == 4
        np.testing.assert_array_equal(out.params[name].encoding.indices, g.params[name].encoding.indices)


def test_finetune_shared_needs_a_codebook():
    with pytest.raises(TrainError, match="graph 'tiny' has no trainable parameter with a Codebook encoding"):
        finetune_shared(tiny_mlp(), [], CE)


# ---- both frontends and real data ---------------------------------------------------------------------


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_digits_shared_sixteen_ways_on_both_frontends(frontend, kind):
    g = digits(kind, frontend)
    out, record = run_pass(g, "share-weights{clusters=16}")
    names = [n for n, p in out.graph.params.items() if p.encoding is not None]
    assert len(names) == (3 if kind == "mlp" else 4) and record.stats["bits"] == 4
    assert all(np.unique(out.graph.params[n].data).size == 16 for n in names)
    assert stored_bytes(out.graph, names) < stored_bytes(g, names) / 6  # 4-bit indices + 16 centroids
    assert count_params(out.graph).nbytes < count_params(g).nbytes
    base, shared = accuracy(g, kind), accuracy(out.graph, kind)
    line = f"\n{kind}/{frontend} share-weights{{clusters=16}}: float {base:.4f} ({count_params(g).nbytes} B), "
    line += f"shared {shared:.4f} ({count_params(out.graph).nbytes} B; weights {stored_bytes(g, names)} -> "
    line += f"{stored_bytes(out.graph, names)} B)"
    assert shared >= base - 0.02
    if frontend == "fx":  # the same weights on both frontends; fine-tune once
        tuned = finetune_shared(out.graph, digits_batches(kind)[0], CE, epochs=2, optimizer="adam", lr=1e-3, log=None)
        after = accuracy(tuned.graph, kind)
        line += f", centroids fine-tuned {after:.4f}"
        assert tuned.epoch_losses[-1] < tuned.epoch_losses[0] and after >= base - 0.02
        assert count_params(tuned.graph).nbytes == count_params(out.graph).nbytes
    print(line)
    second_run_is_unchanged(out.graph, "share-weights{clusters=16}")


def test_prune_then_share_then_fine_tune_on_the_digits_cnn():
    g = digits("cnn", "fx")
    train_b, _ = digits_batches("cnn")
    base = accuracy(g, "cnn")
    pruned = Pipeline.parse("prune-magnitude{sparsity=0.9 scope=global}").run(g).graph
    pruned = train(pruned, train_b, CE, epochs=10, optimizer="adam", lr=3e-3, log=None).graph
    shared = Pipeline.parse("share-weights{clusters=16}").run(pruned).graph
    tuned = finetune_shared(shared, train_b, CE, epochs=3, optimizer="adam", lr=1e-3, log=None).graph
    names = [n for n, p in tuned.params.items() if p.encoding is not None]
    dense, stored = stored_bytes(g, names), stored_bytes(tuned, names)
    acc = accuracy(tuned, "cnn")
    print(
        f"\ncnn prune 0.9 (global) + fine-tune + share 16 + centroid fine-tune: float {base:.4f}, "
        f"pruned {accuracy(pruned, 'cnn'):.4f}, shared {accuracy(shared, 'cnn'):.4f}, tuned {acc:.4f}; "
        f"weights {dense} -> {stored} B (codebooks; sparsity left to the storage format)"
    )
    assert all(tuned.params[n].sparsity == pruned.params[n].sparsity for n in names)
    assert acc >= base - 0.02
