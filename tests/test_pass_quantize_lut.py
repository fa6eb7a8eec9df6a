"""quantize-lut: 2^bits-level lookup tables per layer (Lloyd-Max from quantiles), beside uniform quantization."""

from __future__ import annotations

import numpy as np
import pytest
from compression_support import (
    accuracy,
    digits,
    one_thread,  # noqa: F401  (autouse fixture)
    run_pass,
    second_run_is_unchanged,
    stored_bytes,
    tiny_mlp,
)

from graphopt.analysis.params import count_params
from graphopt.errors import PassError, PipelineParseError
from graphopt.ir.encodings import Codebook
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.quantize_lut import QuantizeLut


def test_golden_ir():
    out, record = run_pass(tiny_mlp(), "quantize-lut{bits=3}")
    assert (
        str(out.graph)
        == """\
graph tiny(%x: f32[2,8]) -> (%fc2)
  @fc1.weight: f32[8,8]  (encoding=codebook(k=8, 3-bit indices))
  @fc1.bias: f32[8]
  @fc2.weight: f32[4,8]  (encoding=codebook(k=8, 3-bit indices))
  %fc1: f32[2,8] = linear(%x, @fc1.weight, @fc1.bias)
  %relu: f32[2,8] = relu(%fc1)
  %fc2: f32[2,4] = linear(%relu, @fc2.weight)
  return %fc2"""
    )
    assert record.stats["bits"] == 3 and record.stats["bytes"] == f"{96 * 4}->{2 * 8 * 4 + 96 * 3 // 8}"
    assert QuantizeLut(bits=4).tolerance().describe() == "SQNR>=8.1 dB"


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_levels_beat_uniform_quantization_of_the_same_width(bits):
    g = tiny_mlp(seed=bits)
    w = g.param("fc1.weight").data.astype(np.float64)
    QuantizeLut(bits=bits).run(g, PassContext())
    book = g.param("fc1.weight").encoding
    assert isinstance(book, Codebook) and book.centroids.size == 2**bits == np.unique(g.param("fc1.weight").data).size
    lut_error = ((g.param("fc1.weight").data - w) ** 2).sum()
    step = 2 * np.abs(w).max() / (2**bits - 1)  # symmetric uniform grid with 2^bits levels over [-max, max]
    uniform = np.round((w + np.abs(w).max()) / step) * step - np.abs(w).max()
    assert lut_error < ((uniform - w) ** 2).sum()
    for k in range(2**bits):  # Lloyd-Max: every level is the mean of the weights it takes
        assert book.centroids[k] == pytest.approx(w[book.indices == k].mean(), abs=1e-6)


def test_masked_weights_keep_an_exact_zero_level():
    pruned = Pipeline.parse("prune-magnitude{sparsity=0.5},quantize-lut{bits=2}").run(tiny_mlp()).graph
    p = pruned.param("fc2.weight")
    assert p.encoding.centroids.size == 4 and p.encoding.centroids[0] == 0.0
    assert np.all(p.data[~p.mask] == 0) and np.all(p.encoding.indices[p.mask] > 0)


def test_a_table_larger_than_the_layer_is_an_error_naming_it():
    with pytest.raises(PassError, match=r"quantize-lut: parameter 'fc2.weight' \(linear 'fc2'\) has 32 weights"):
        QuantizeLut(bits=6).run(tiny_mlp(), PassContext())


@pytest.mark.parametrize(
    "text, message",
    [
        ("quantize-lut{bits=0}", "bits must lie in 1..8, got 0"),
        ("quantize-lut{bits=9}", "bits must lie in 1..8, got 9"),
        ("quantize-lut{bits=two}", "option 'bits' of pass 'quantize-lut' expects int"),
        ("quantize-lut{include=[weights]}", "include 'weights' is not one of"),
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
    for bits in (2, 3, 4):
        text = f"quantize-lut{{bits={bits}}}"
        out, record = run_pass(g, text)
        names = [n for n, p in out.graph.params.items() if p.encoding is not None]
        assert len(names) == (3 if kind == "mlp" else 4)
        assert stored_bytes(out.graph, names) < stored_bytes(g, names) * (bits + 0.5) / 32
        acc = accuracy(out.graph, kind)
        lines.append(f"  {text}: {acc:.4f}, {count_params(out.graph).nbytes} B")
        if bits >= 3:
            assert acc >= base - 0.03, (bits, base, acc)
        second_run_is_unchanged(out.graph, text)
    print("\n".join(lines))
