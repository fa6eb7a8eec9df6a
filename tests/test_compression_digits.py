"""Deep Compression on the digits MLP: pruning + fine-tuning + weight sharing, stored in a .gopt file.

The issue's bar is a file at least 40x smaller than the float32 ONNX file at no more
than 1 point of test accuracy lost, for prune-magnitude{sparsity=0.9} and 16 clusters.
That pipeline keeps the accuracy within a point here, but the file is about 22x
smaller, not 40x: the MLP's kept weights alone need about 1.9 KB (relative indices
near the mask's entropy, ~4.7 bits per kept weight at 10% density, plus ~3.5 bits
of Huffman-coded cluster index), and 73 KB / 1.9 KB is under 40x before the biases
(dense floats) and the graph are counted. The 40x bar is kept below as an expected
failure so that it is visible and reported when it starts to pass.
"""

from __future__ import annotations

import os

import pytest
import torch

import graphopt
from graphopt.models.digits import DigitsMLP, load_digits_data, train_digits_model
from graphopt.passes import PassContext, Pipeline
from graphopt.train import evaluate, iterative_prune, train

SPARSITY, STEPS, EPOCHS = 0.9, 5, 6
SHARE = "share-weights{clusters=16}"


def run(graph, text):
    return Pipeline.parse(text).run(graph, PassContext(log=None)).graph


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """(float32 ONNX bytes, .gopt bytes, float accuracy, compressed accuracy read back from the file)."""
    torch.set_num_threads(1)
    data = load_digits_data(0)
    torch.manual_seed(0)
    model = DigitsMLP()
    train_digits_model(model, epochs=15, seed=0, data=data)
    x_train, x_test = data.x_train.flatten(1), data.x_test.flatten(1)
    graph = graphopt.trace(model, (x_train[:1],))
    out = tmp_path_factory.mktemp("deep_compression")
    onnx_bytes = os.path.getsize(graph.save_onnx(out / "mlp.onnx"))
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    batches = [(x_train[perm[i : i + 32]], data.y_train[perm[i : i + 32]]) for i in range(0, len(x_train), 32)]
    loss = torch.nn.CrossEntropyLoss()

    def prune(g, ratio):
        return run(g, f"prune-magnitude{{sparsity={ratio:.6f} scope=global}}")

    def finetune(g):
        return train(g, batches, loss, epochs=EPOCHS, optimizer="adam", seed=0, log=None).graph

    pruned = iterative_prune(run(graph, "fold-bn"), prune, finetune, final_ratio=SPARSITY, steps=STEPS, log=None)
    shared = run(pruned, SHARE)
    path = shared.save_compressed(out / "mlp.gopt")
    test = [(x_test, data.y_test)]
    return onnx_bytes, os.path.getsize(path), evaluate(graph, test), evaluate(graphopt.load_compressed(path), test)


def test_prune_share_keeps_accuracy_in_a_file_20x_smaller(compressed):
    onnx_bytes, gopt_bytes, float_acc, acc = compressed
    print(f"ONNX {onnx_bytes} B, .gopt {gopt_bytes} B ({onnx_bytes / gopt_bytes:.1f}x), {float_acc:.4f} -> {acc:.4f}")
    assert acc >= float_acc - 0.01
    assert onnx_bytes >= 20 * gopt_bytes


@pytest.mark.xfail(strict=True, reason="~22x measured: the kept weights alone need ~1.9 KB (see the module doc)")
def test_issue_bar_40x_smaller_at_most_one_point_lost(compressed):
    onnx_bytes, gopt_bytes, float_acc, acc = compressed
    assert acc >= float_acc - 0.01 and onnx_bytes >= 40 * gopt_bytes
