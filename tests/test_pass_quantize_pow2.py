"""quantize-pow2: weights rounded in the log domain to ±2^e (e in a per-layer window of 2^(bits-1)-1 exponents) or 0."""

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
from graphopt.errors import PipelineParseError
from graphopt.ir.encodings import PowerOfTwo
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.quantize_pow2 import QuantizePow2, pow2_encoding


def test_golden_ir():
    out, record = run_pass(tiny_mlp(), "quantize-pow2")
    assert (
        str(out.graph)
        == """\
graph tiny(%x: f32[2,8]) -> (%fc2)
  @fc1.weight: f32[8,8]  (encoding=pow2(4-bit codes, ±2^-5..2^1 and 0))
  @fc1.bias: f32[8]
  @fc2.weight: f32[4,8]  (encoding=pow2(4-bit codes, ±2^-5..2^1 and 0))
  %fc1: f32[2,8] = linear(%x, @fc1.weight, @fc1.bias)
  %relu: f32[2,8] = relu(%fc1)
  %fc2: f32[2,4] = linear(%relu, @fc2.weight)
  return %fc2"""
    )
    assert record.stats["layers"] == 2 and record.stats["bytes"] == f"{96 * 4}->{64 // 2 + 2 + 32 // 2 + 2}"
    assert QuantizePow2().tolerance().describe() == "unchecked"


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_log_domain_rounding_to_the_window(bits):
    w = np.random.default_rng(bits).standard_normal((16, 32)).astype(np.float32)
    w[0, :3] = 0.0
    enc = pow2_encoding(w, bits)
    q = enc.decode()
    assert isinstance(enc, PowerOfTwo) and q.dtype == np.float32 and enc.codes.dtype == np.uint8
    e_max = int(np.rint(np.log2(np.abs(w).max())))
    e_min = e_max - (2 ** (bits - 1) - 1) + 1
    assert enc.exponent_offset == e_min
    nonzero = q != 0
    exps = np.log2(np.abs(q[nonzero]))
    assert np.all(exps == np.round(exps)) and exps.min() >= e_min and exps.max() <= e_max
    assert np.all(np.sign(q[nonzero]) == np.sign(w[nonzero]))
    a = np.abs(w.astype(np.float64))
    inside = nonzero & (a >= 2.0**e_min) & (a <= 2.0**e_max)
    assert np.all(np.abs(np.log2(a[inside]) - np.log2(np.abs(q[inside]))) <= 0.5)  # nearest in the log domain
    np.testing.assert_array_equal(q == 0, a < 2.0 ** (e_min - 1))  # below half the smallest power: zero
    assert enc.nbytes == (w.size * bits + 7) // 8 + 2


def test_masked_entries_take_the_zero_code():
    pruned = Pipeline.parse("prune-magnitude{sparsity=0.75},quantize-pow2{bits=4}").run(tiny_mlp()).graph
    p = pruned.param("fc1.weight")
    assert isinstance(p.encoding, PowerOfTwo) and np.all(p.encoding.codes[~p.mask] & 7 == 0)
    assert np.all(p.data[~p.mask] == 0) and p.sparsity == 0.75


def test_an_all_zero_weight_is_left_alone():
    g = tiny_mlp()
    g.set_param("fc2.weight", np.zeros((4, 8), np.float32))
    record = QuantizePow2().run(g, PassContext())
    assert record.stats["skipped"] == {"fc2.weight": "all zero"} and g.param("fc2.weight").encoding is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("quantize-pow2{bits=0}", "bits must lie in 2..8 .*got 0"),
        ("quantize-pow2{bits=1}", "bits must lie in 2..8 .*got 1"),
        ("quantize-pow2{bits=9}", "got 9"),
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
    for bits in (3, 4, 5):
        text = f"quantize-pow2{{bits={bits}}}"
        out, record = run_pass(g, text)
        names = [n for n, p in out.graph.params.items() if p.encoding is not None]
        assert len(names) == (3 if kind == "mlp" else 4)
        assert stored_bytes(out.graph, names) < stored_bytes(g, names) * (bits + 0.5) / 32
        acc = accuracy(out.graph, kind)
        lines.append(
            f"  {text}: {acc:.4f}, {count_params(out.graph).nbytes} B, {record.stats['min_weight_sqnr_db']} dB"
        )
        if bits >= 4:
            assert acc >= base - 0.04, (bits, base, acc)
        second_run_is_unchanged(out.graph, text)
    print("\n".join(lines))
