"""quantize-weights: weight-only int4/int8 with group-wise scales; ONNX (opset 21) through onnxruntime; W4A8."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import torch
from graph_support import _import
from torch import nn

from graphopt.errors import EmitError, PipelineParseError
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.passes.base import sqnr_db
from graphopt.passes.quantize_weights import QuantizeWeights

X = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)


def mlp() -> nn.Module:
    """Rows and columns of the first weight span a decade: finer scales must pay off."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    with torch.no_grad():
        m[0].weight.mul_(torch.logspace(-1, 0, 64).view(64, 1) * torch.logspace(-1, 0, 256).view(1, 256))
    return m


def run(graph, text, x=X):
    before = str(graph)
    out = Pipeline.parse(text).run(graph, PassContext(instruments=default_instruments(), inputs=[[x]]))
    assert str(graph) == before
    out.graph.verify()
    return out


def test_golden_int4_groups_of_128():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    out = run(graph, "quantize-weights")
    assert out.records[0].stats == {
        "quantized": 2,
        "skipped": 0,
        "skipped_reasons": {},
        "bits": 4,
        "scales": "per-group of 128",
    }
    lines = [line.strip().split("  (")[0] for line in str(out.graph).splitlines()[1:]]
    assert lines == [
        "@0.bias: f32[64]",
        "@2.bias: f32[10]",
        "@0.weight.int4: i4[64,256]",
        "@0.weight.scale: f32[64,2]",
        "@0.weight.zero_point: i4[64,2]",
        "@2.weight.int4: i4[10,64]",
        "@2.weight.scale: f32[10]",
        "@2.weight.zero_point: i4[10]",
        "%2.weight.dq: f32[10,64] = dequantize(@2.weight.int4, @2.weight.scale, @2.weight.zero_point) "
        "{axis=0, block_size=none}",
        "%0.weight.dq: f32[64,256] = dequantize(@0.weight.int4, @0.weight.scale, @0.weight.zero_point) "
        "{axis=1, block_size=128}",
        "%linear: f32[4,64] = linear(%input, %0.weight.dq, @0.bias)",
        "%relu: f32[4,64] = relu(%linear)",
        "%linear_1: f32[4,10] = linear(%relu, %2.weight.dq, @2.bias)",
        "return %linear_1",
    ]
    q = out.graph.param("0.weight.int4").data
    assert q.dtype == np.dtype(ml_dtypes.int4)
    assert q.astype(np.int8).min() == -7 and q.astype(np.int8).max() == 7  # narrow symmetric, both ends used
    assert not QuantizeWeights().run(out.graph.copy(), PassContext()).changed  # a second run changes nothing


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_finer_scales_lose_less(frontend):
    graph = _import(frontend, mlp(), (torch.from_numpy(X),))
    ref = graph.run([X])[0]
    sqnr = {}
    for text in [
        "quantize-weights{bits=4 scales=per-tensor}",
        "quantize-weights{bits=4 scales=per-channel}",
        "quantize-weights{bits=4 group=32}",
        "quantize-weights{bits=8 group=32}",
        "quantize-weights{bits=8 group=32 symmetric=false}",
    ]:
        sqnr[text] = sqnr_db(ref, run(graph, text).graph.run([X])[0])
    values = list(sqnr.values())
    assert values[0] < values[1] < values[2] < values[3], sqnr
    assert values[2] > 15 and values[3] > 35 and values[4] > 35, sqnr


def test_onnx_int4_blocked_through_onnxruntime():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    q = run(graph, "quantize-weights{bits=4 group=64 symmetric=false}").graph
    with pytest.raises(EmitError, match=r"dequantize to/from uint4 needs opset >= 21"):
        q.to_onnx()
    model = q.to_onnx(opset=21)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(got, q.run([X])[0], rtol=1e-5, atol=1e-5)


def test_conv_blocks_along_input_channels():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(64, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 64, 5, 5)
    graph = _import("fx", conv, (x,))
    out = run(graph, "quantize-weights{bits=8 group=16}", x.numpy()).graph
    assert out.param("0.weight.scale").data.shape == (8, 4, 3, 3)  # 64 input channels in blocks of 16
    assert out.param("2.weight.scale").data.shape == (4,)  # 8 input channels <= 16: per output channel
    assert sqnr_db(graph.run([x.numpy()])[0], out.run([x.numpy()])[0]) > 35


def test_quantize_after_weight_only_leaves_those_layers_float_and_requantize_gives_w4a8():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    calib = [[np.random.default_rng(i).standard_normal(X.shape).astype(np.float32)] for i in range(4)]
    ctx = PassContext(calibration=calib)
    weight_first = Pipeline.parse("quantize-weights,quantize").run(graph, ctx)
    stats = weight_first.records[1].stats
    assert stats["quantized"] == 0 and set(stats["skipped_reasons"].values()) == {"already quantized"}
    assert "quantize" not in weight_first.graph.op_counts()  # activations stay float: no W4A8 this way

    w8a8 = Pipeline.parse("quantize").run(graph, PassContext(calibration=calib)).graph
    w4a8 = run(w8a8, "quantize-weights{bits=4 scales=per-channel requantize=true}")
    g = w4a8.graph
    assert w4a8.records[0].stats["quantized"] == 2 and w4a8.records[0].stats["skipped"] == 0
    assert g.param(g.node("0.weight.dq").inputs[0]).data.dtype == np.dtype(ml_dtypes.int4)
    assert g.op_counts()["quantize"] == 2  # activation Q/DQ kept: the input, the relu output
    # the int32 bias moved to the new s_x * s_w grid and still holds the same float bias
    bias_dq, x_dq, w_dq = g.node("0.bias.dq"), g.node("input.dq"), g.node("0.weight.dq")
    np.testing.assert_allclose(
        g.param(bias_dq.inputs[1]).data, g.param(x_dq.inputs[1]).data * g.param(w_dq.inputs[1]).data, rtol=1e-6
    )
    bias = g.param(bias_dq.inputs[0]).data * g.param(bias_dq.inputs[1]).data
    np.testing.assert_allclose(bias, graph.param("0.bias").data, atol=float(g.param(bias_dq.inputs[1]).data.max()))
    assert sqnr_db(graph.run([X])[0], g.run([X])[0]) > 10


def test_bad_options():
    with pytest.raises(PipelineParseError, match="bits must be 4 or 8"):
        Pipeline.parse("quantize-weights{bits=3}")
    with pytest.raises(PipelineParseError, match="group must be at least 1"):
        Pipeline.parse("quantize-weights{group=0}")
    with pytest.raises(PipelineParseError, match="have no weights to quantize"):
        Pipeline.parse("quantize-weights{ops=[relu]}")
    text = "quantize-weights{bits=8 scales=per-channel symmetric=false}"
    assert Pipeline.parse(str(Pipeline.parse(text))) == Pipeline.parse(text)
