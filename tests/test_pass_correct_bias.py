"""correct-bias: the quantized graph's mean output per channel moves onto the float graph's; int32 grid kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_support import _import
from torch import nn

from graphopt.errors import PassError
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.passes.correct_bias import CorrectBias
from graphopt.passes.weight_qdq import FloatReference


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)
    ).eval()


def sets(n: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal((8, 3, 8, 8)) + 0.5).astype(np.float32)] for _ in range(n)]


def channel_means(graph, node: str, data) -> np.ndarray:
    axis, value = (1 if graph.node(node).op == "conv" else -1), graph.node(node).output
    out = np.concatenate([graph.run(x, capture=[value])[1][value] for x in data])
    return np.moveaxis(out, axis, -1).reshape(-1, out.shape[axis]).mean(0)


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_mean_shift_is_removed_layer_by_layer(frontend):
    graph = _import(frontend, model(), (torch.from_numpy(sets(1, 0)[0][0]),))
    calib, held_out = sets(8, 1), sets(4, 2)
    ctx = PassContext(instruments=[*default_instruments(), FloatReference()], calibration=calib, inputs=held_out[:1])
    out = Pipeline.parse("quantize-weights{bits=4 scales=per-tensor},correct-bias").run(graph, ctx)
    plain, corrected = out.records, out.graph
    stats = plain[1].stats
    assert stats["corrected"] == 3 and stats["calibration"] == "calibration data: 64 samples in 8 sets"
    quantized = Pipeline.parse("quantize-weights{bits=4 scales=per-tensor}").run(graph).graph
    layers = [n.name for n in graph.nodes if n.op in ("conv", "linear")]
    for name in layers:  # measured on held-out data: the shift was a property of the weights, not of the sample
        ref = channel_means(graph, name, held_out)
        before = np.abs(channel_means(quantized, name, held_out) - ref).mean()
        after = np.abs(channel_means(corrected, name, held_out) - ref).mean()
        assert after < 0.5 * before, (name, before, after)
    assert "bias" in str(corrected.node(layers[0]).inputs)  # float biases corrected in place


def test_int32_bias_stays_on_its_grid_and_a_missing_bias_is_created():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    graph = _import("fx", m, (torch.from_numpy(sets(1, 0)[0][0]),))
    calib = sets(4, 1)
    ctx = PassContext(instruments=[FloatReference()], calibration=calib)
    q = Pipeline.parse("quantize").run(graph, ctx).graph
    assert len(q.node("conv2d").inputs) == 2
    result = CorrectBias().run(q.copy(), PassContext(reference=graph, calibration=calib))
    g = result.graph
    g.verify()
    bias = g.producer(g.node("conv2d").inputs[2])  # conv(x, w) => conv(x, w, dequantize(int32, s_x * s_w))
    assert bias.op == "dequantize" and g.param(bias.inputs[0]).data.dtype == np.int32
    x_scale = g.param(g.producer(g.node("conv2d").inputs[0]).inputs[1]).data
    w_scale = g.param(g.producer(g.node("conv2d").inputs[1]).inputs[1]).data
    np.testing.assert_allclose(g.param(bias.inputs[1]).data, x_scale * w_scale, rtol=1e-6)
    old = q.param("2.bias.int32").data
    assert np.any(g.param("2.bias.int32").data != old)  # the existing int32 bias got new integers
    assert g.param("2.bias.scale").data.tolist() == q.param("2.bias.scale").data.tolist()


def test_needs_a_reference_and_says_when_nothing_is_quantized():
    graph = _import("fx", model(), (torch.from_numpy(sets(1, 0)[0][0]),))
    stats = CorrectBias().run(graph.copy(), PassContext()).stats
    assert stats["corrected"] == 0 and "no conv/linear reads a quantized weight" in stats["reason"]
    q = Pipeline.parse("quantize-weights{bits=8}").run(graph).graph
    with pytest.raises(PassError, match=r"PassContext\(reference=float_graph\)"):
        CorrectBias().run(q.copy(), PassContext())
    other = _import("fx", nn.Sequential(nn.Conv2d(3, 2, 1)).eval(), (torch.from_numpy(sets(1, 0)[0][0]),))
    with pytest.raises(PassError, match="have no layer of the same name, op and output shape"):
        CorrectBias().run(q.copy(), PassContext(reference=other))
    with pytest.raises(ValueError, match="samples must be at least 1"):
        CorrectBias(samples=0)
