"""quantize{weights-bits=4 activations-bits=8}: W4A8 from the quantize pass itself, packed int4 weights."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import torch
from graph_support import _import
from test_pass_quantize_weights import X, mlp

from graphopt.analysis.params import count_params
from graphopt.errors import EmitError, PipelineParseError
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.passes.base import sqnr_db

CALIB = [[np.random.default_rng(i).standard_normal(X.shape).astype(np.float32)] for i in range(4)]


def quantize(graph, text):
    before = str(graph)
    ctx = PassContext(instruments=default_instruments(), inputs=[[X]], calibration=CALIB)
    out = Pipeline.parse(text).run(graph, ctx)
    assert str(graph) == before
    out.graph.verify()
    return out


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_w4a8_int4_weights_int8_activations(frontend):
    graph = _import(frontend, mlp(), (torch.from_numpy(X),))
    g = quantize(graph, "quantize{weights-bits=4 activations-bits=8}").graph
    dqs = [n for n in g.nodes if n.op == "dequantize" and g.is_param(n.inputs[0])]
    weights = [g.param(n.inputs[0]).data for n in dqs if g.param(n.inputs[0]).data.ndim == 2]
    assert len(weights) == 2 and all(w.dtype == np.dtype(ml_dtypes.int4) for w in weights)
    for w in weights:  # narrow symmetric [-7, 7], both ends reached (per output channel)
        ints = w.astype(np.int8)
        assert ints.min() >= -7 and ints.max() <= 7 and (np.abs(ints).max(axis=1) == 7).all()
    acts = [n for n in g.nodes if n.op == "quantize"]
    assert len(acts) == 2 and {n.attrs["dtype"] for n in acts} == {"int8"}  # input and relu output
    # the int32 bias sits on the s_x * s_w grid of the int4 weight
    first = next(n for n in g.nodes if n.op == "linear")
    x_dq, w_dq, bias_dq = (g.producer(v) for v in first.inputs)
    assert g.param(bias_dq.inputs[0]).data.dtype == np.int32
    np.testing.assert_allclose(
        g.param(bias_dq.inputs[1]).data, g.param(x_dq.inputs[1]).data * g.param(w_dq.inputs[1]).data, rtol=1e-6
    )
    weight_bytes = {p.name: p.nbytes for p in count_params(g).params if p.dtype == "int4" and p.elements > 64}
    assert sorted(weight_bytes.values()) == [10 * 64 // 2, 64 * 256 // 2]  # two per byte
    db = sqnr_db(graph.run([X])[0], g.run([X])[0])
    assert 12 < db < 35, db  # well below W8A8 (~35 dB here), well above noise


def test_w4a8_one_rounding_beats_composing_by_hand():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    ref = graph.run([X])[0]
    direct = quantize(graph, "quantize{weights-bits=4}").graph
    hand = quantize(graph, "quantize,quantize-weights{bits=4 scales=per-channel requantize=true}").graph
    w8a8 = quantize(graph, "quantize").graph
    db = {name: sqnr_db(ref, g.run([X])[0]) for name, g in [("direct", direct), ("hand", hand), ("w8a8", w8a8)]}
    assert db["hand"] - 0.5 <= db["direct"] < db["w8a8"] - 6, db
    assert not Pipeline.parse("quantize{weights-bits=4}").run(direct).changed  # a second run changes nothing


def test_w4a8_onnx_opset21_through_onnxruntime():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    g = quantize(graph, "quantize{weights-bits=4 weights=per-tensor}").graph
    with pytest.raises(EmitError, match=r"dequantize.*int4 needs opset >= 21"):
        g.to_onnx()
    sess = ort.InferenceSession(g.to_onnx(opset=21).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(got, g.run([X])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "text,message",
    [
        ("quantize{weights-bits=3}", "weights-bits must be 4 or 8, got 3"),
        ("quantize{weights-bits=16}", "weights-bits must be 4 or 8, got 16"),
        ("quantize{activations-bits=4}", r"activations-bits must be 8 \(int8/uint8 activations\), got 4"),
    ],
)
def test_bits_outside_what_is_supported_name_the_option(text, message):
    with pytest.raises(PipelineParseError, match=message):
        Pipeline.parse(text)


def test_round_trips_as_text():
    p = Pipeline.parse("quantize{weights-bits=4 activations-bits=8 weights=per-tensor}")
    assert Pipeline.parse(str(p)) == p and p.passes[0].weights_bits == 4


def test_w4a8_lowered_by_tvm_matches_graph_run():
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    g = quantize(graph, "quantize{weights-bits=4}").graph
    got = compile_graph(g, "x86")(X)
    got = got[0] if isinstance(got, (list, tuple)) else got
    want = g.run([X])[0]
    # integer kernels requantize with round-half-even where torch's fake-quant rounds in float: within a step
    step = float(np.abs(want).max()) / 64
    assert np.max(np.abs(np.asarray(got) - want)) <= step
    assert sqnr_db(want, np.asarray(got)) > 30


def test_w4a8_file_stores_int4_packed_and_loads_back(tmp_path):
    from graphopt.storage import load_compressed

    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    sizes = {}
    for bits in (8, 4):
        g = quantize(graph, f"quantize{{weights-bits={bits}}}").graph
        path = g.save_compressed(tmp_path / f"w{bits}a8.gopt", entropy=False)
        sizes[bits] = path.stat().st_size
        back = load_compressed(path)
        np.testing.assert_array_equal(back.run([X])[0], g.run([X])[0])
    weights = 64 * 256 + 10 * 64
    assert sizes[8] - sizes[4] >= 0.45 * weights  # half a byte saved per weight (two int4 per byte)
