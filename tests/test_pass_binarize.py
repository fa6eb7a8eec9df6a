"""binarize: sign(w) * mean|w| per output channel (XNOR-Net), first and last layer kept float, 1 bit per weight."""

from __future__ import annotations

import numpy as np
import pytest
from compression_support import (
    accuracy,
    conv_net,
    digits,
    one_thread,  # noqa: F401  (autouse fixture)
    run_pass,
    second_run_is_unchanged,
    stored_bytes,
    tiny_mlp,
)

from graphopt.analysis.params import count_params
from graphopt.errors import PipelineParseError
from graphopt.ir.encodings import BinarySign
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.binarize import Binarize


def three_layers() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("three")
    h = g.add_input("x", TensorType((2, 8)))
    for i, (o, n) in enumerate([(8, 8), (8, 8), (4, 8)]):
        w = g.add_param(f"fc{i}.weight", rng.standard_normal((o, n)).astype(np.float32))
        h = g.add_node("linear", [h, w], name=f"fc{i}").output
    g.set_outputs([h])
    return g


def test_golden_ir_keeps_the_first_and_last_layer():
    out, record = run_pass(three_layers(), "binarize")
    assert (
        str(out.graph)
        == """\
graph three(%x: f32[2,8]) -> (%fc2)
  @fc0.weight: f32[8,8]
  @fc1.weight: f32[8,8]  (encoding=binary(1-bit signs, 8 scales on axis 0))
  @fc2.weight: f32[4,8]
  %fc0: f32[2,8] = linear(%x, @fc0.weight)
  %fc1: f32[2,8] = linear(%fc0, @fc1.weight)
  %fc2: f32[2,4] = linear(%fc1, @fc2.weight)
  return %fc2"""
    )
    assert record.stats == {"layers": 1, "bytes": "256->40", "kept_float": ["fc0.weight", "fc2.weight"]}
    assert Binarize().tolerance().describe() == "unchecked"


@pytest.mark.parametrize("scale", ["per-channel", "per-tensor"])
def test_values_are_sign_times_mean_magnitude(scale):
    g = conv_net()
    w = g.param("c1.weight").data.astype(np.float64)
    Binarize(scale=scale, keep_first_last=False).run(g, PassContext())
    enc = g.param("c1.weight").encoding
    assert isinstance(enc, BinarySign) and enc.signs.dtype == np.bool_
    alpha = np.abs(w).mean(axis=(1, 2, 3), keepdims=True) if scale == "per-channel" else np.abs(w).mean()
    np.testing.assert_allclose(g.param("c1.weight").data, np.where(w >= 0, alpha, -alpha), rtol=1e-6)
    assert enc.scales.size == (8 if scale == "per-channel" else 1) and enc.axis == (
        0 if scale == "per-channel" else None
    )
    assert enc.nbytes == 8 * 8 * 9 // 8 + enc.scales.nbytes
    # for fixed signs, alpha = mean|w| minimises the squared error: any other scale does worse
    error = ((g.param("c1.weight").data - w) ** 2).sum()
    for f in (0.9, 1.1):
        assert ((np.where(w >= 0, alpha * f, -alpha * f) - w) ** 2).sum() > error


def test_matmul_operand_scales_run_along_its_outputs_and_masked_weights_are_skipped():
    g = Graph("mm")
    x = g.add_input("x", TensorType((2, 8)))
    b = g.add_param("b", np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    g.set_outputs([g.add_node("matmul", [x, b], name="mm").output])
    Binarize(keep_first_last=False).run(g, PassContext())
    assert g.param("b").encoding.axis == 1 and g.param("b").encoding.scales.size == 3
    h = tiny_mlp()
    pruned = Pipeline.parse("prune-magnitude{sparsity=0.5},binarize{keep-first-last=false}").run(h).graph
    assert pruned.param("fc1.weight").encoding is None
    assert pruned.param("fc1.weight").sparsity == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("binarize{scale=per-row}", "option 'scale' of pass 'binarize' expects one of per-channel|per-tensor"),
        ("binarize{keep-first-last=maybe}", "write true or false"),
        ("binarize{include=[all]}", "include 'all' is not one of"),
    ],
)
def test_bad_options_are_named(text, message):
    with pytest.raises(PipelineParseError, match=message):
        Pipeline.parse(text)


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_digits_on_both_frontends(frontend, kind):
    g = digits(kind, frontend)
    base = accuracy(g, kind)
    lines = [f"\n{kind}/{frontend} float: {base:.4f}, {count_params(g).nbytes} B"]
    for text in ("binarize", "binarize{keep-first-last=false}", "binarize{scale=per-tensor keep-first-last=false}"):
        out, record = run_pass(g, text)
        names = [n for n, p in out.graph.params.items() if p.encoding is not None]
        assert len(names) == (1 if kind == "mlp" else 2) + (2 if "false" in text else 0)
        assert stored_bytes(out.graph, names) < stored_bytes(g, names) / 20  # 1 bit per weight + a scale per channel
        acc = accuracy(out.graph, kind)
        lines.append(f"  {text}: {acc:.4f}, {count_params(out.graph).nbytes} B")
        assert acc > 0.3  # far above chance (0.1) untrained; binary nets are trained binary to recover the rest
        second_run_is_unchanged(out.graph, text)
    print("\n".join(lines))
