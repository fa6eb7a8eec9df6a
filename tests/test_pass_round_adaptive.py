"""round-adaptive (AdaRound): learned rounding lowers every layer's output error; integers stay in range."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_support import _import
from torch import nn

from graphopt.errors import PassError
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.passes.base import sqnr_db
from graphopt.passes.round_adaptive import RoundAdaptive
from graphopt.passes.weight_qdq import FloatReference, dequantized, quantized_weights


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)
    ).eval()


def sets(n: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((8, 3, 8, 8)).astype(np.float32)] for _ in range(n)]


def output_sqnr(reference, graph, data) -> float:
    ref = np.concatenate([reference.run(x)[0] for x in data])
    return sqnr_db(ref, np.concatenate([graph.run(x)[0] for x in data]))


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize(
    "quantizer, gain_db",
    [
        ("quantize-weights{bits=4 scales=per-channel}", 0.5),  # 4-bit weights: rounding matters
        ("quantize", -1.0),  # int8 weights and activations: activation noise dominates; no loss
    ],
)
def test_learned_rounding_beats_nearest(frontend, quantizer, gain_db):
    graph = _import(frontend, model(), (torch.from_numpy(sets(1, 0)[0][0]),))
    calib, held_out = sets(8, 1), sets(4, 2)
    lines = []
    ctx = PassContext(
        instruments=[*default_instruments(), FloatReference()], calibration=calib, inputs=held_out[:1], log=lines.append
    )
    out = Pipeline.parse(f"{quantizer},round-adaptive{{iterations=150}}").run(graph, ctx)
    nearest = Pipeline.parse(quantizer).run(graph, PassContext(calibration=calib)).graph
    stats = out.records[1].stats
    assert stats["layers"] == 3 and 0 < stats["flipped"] < 0.5
    assert sum("round-adaptive: layer" in line for line in lines) == 3  # one progress line per layer
    assert output_sqnr(graph, out.graph, held_out) > output_sqnr(graph, nearest, held_out) + gain_db
    for qw in quantized_weights(out.graph):  # every weight rounded down or up from its float value
        w = ctx.reference.param(ctx.reference.node(qw.node).inputs[1]).data
        q = out.graph.param(qw.q).data.astype(np.int64)
        assert q.min() >= qw.qmin and q.max() <= qw.qmax
        scale = np.abs(dequantized(out.graph, qw) - w).max() / np.abs(w).max()
        assert scale < 2.0 / (qw.qmax + 1)  # at most one grid step from the float weight
    assert out.graph.op_counts() == nearest.op_counts()  # only integers changed


def test_needs_the_float_reference():
    graph = _import("fx", model(), (torch.from_numpy(sets(1, 0)[0][0]),))
    q = Pipeline.parse("quantize-weights{bits=4}").run(graph).graph
    with pytest.raises(PassError, match=r"round-adaptive: needs the float graph"):
        RoundAdaptive(iterations=1).run(q.copy(), PassContext())
    stats = RoundAdaptive().run(graph.copy(), PassContext()).stats
    assert stats["layers"] == 0 and "no conv/linear reads a quantized weight" in stats["reason"]
    with pytest.raises(ValueError, match="beta-start >= beta-end"):
        RoundAdaptive(beta_start=1.0, beta_end=2.0)
