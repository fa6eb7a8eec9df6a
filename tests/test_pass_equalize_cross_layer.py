"""equalize-cross-layer: golden IR, exact numerics on both frontends, equal ranges, clip handling, no-pair stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.errors import PipelineParseError
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.equalize_cross_layer import EqualizeCrossLayer


def chain(act: nn.Module | None = None) -> nn.Module:
    """conv -> act -> depthwise conv -> relu -> 1x1 conv -> pool -> flatten -> linear, with uneven channel ranges."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        act or nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).eval()
    with torch.no_grad():
        m[0].weight.mul_(torch.logspace(-2, 1, 8).view(8, 1, 1, 1))
        m[2].weight.mul_(torch.logspace(1, -1, 8).view(8, 1, 1, 1))
    return m


INPUTS = (torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3)),)


def ranges(w: np.ndarray, axis: int, groups: int = 1) -> np.ndarray:
    if axis == 0:
        return np.abs(w.reshape(w.shape[0], -1)).max(1)
    if groups > 1:  # depthwise: input channel i is row i
        return np.abs(w.reshape(w.shape[0], -1)).max(1)
    return np.abs(np.moveaxis(w, 1, 0).reshape(w.shape[1], -1)).max(1)


def test_golden_ir():
    """Weights change in place; under clip=exact a relu6 becomes relu then a per-channel minimum."""
    from graphopt.frontends.fx import trace

    out, _ = _run(trace(chain(nn.ReLU6()), INPUTS), "equalize-cross-layer{clip=exact}")
    stats = out.records[0].stats
    assert (stats["pairs"], stats["skipped"]) == (3, 0) and stats["iterations"] > 1
    nodes = [line.strip().split(" {")[0] for line in str(out.graph).splitlines() if line.strip().startswith("%")]
    assert nodes == [
        "%conv2d: f32[2,8,6,6] = conv(%input, @0.weight, @0.bias)",
        "%hardtanh: f32[2,8,6,6] = relu(%conv2d)",
        "%hardtanh.min: f32[2,8,6,6] = minimum(%hardtanh, @hardtanh.max)",
        "%conv2d_1: f32[2,8,6,6] = conv(%hardtanh.min, @2.weight, @2.bias)",
        "%relu: f32[2,8,6,6] = relu(%conv2d_1)",
        "%conv2d_2: f32[2,4,6,6] = conv(%relu, @4.weight, @4.bias)",
        "%adaptive_avg_pool2d: f32[2,4,1,1] = adaptive_avg_pool(%conv2d_2)",
        "%flatten: f32[2,4] = flatten(%adaptive_avg_pool2d)",
        "%linear: f32[2,5] = linear(%flatten, @7.weight, @7.bias)",
    ]
    assert "@hardtanh.max: f32[8,1,1]  (frozen)" in str(out.graph)


def _run(graph, text, same=True):
    from graph_support import assert_same_outputs, run_checked_pipeline

    out, ctx = run_checked_pipeline(graph, [t.numpy() for t in INPUTS], text)
    if same:
        assert_same_outputs(graph, out.graph, [t.numpy() for t in INPUTS], atol=1e-4)
    return out, ctx


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_ranges_match_and_outputs_are_exact(frontend):
    from graph_support import _import

    graph = _import(frontend, chain(), INPUTS)
    out, _ = _run(graph, "equalize-cross-layer")
    g = out.graph
    convs = [n for n in g.nodes if n.op in ("conv", "linear")]
    before = [graph.param(n.inputs[1]).data for n in (graph.node(c.name) for c in convs)]
    assert not np.allclose(ranges(before[0], 0), ranges(before[1], 1, groups=8))  # uneven to begin with
    for first, second in zip(convs, convs[1:]):
        w1, w2 = g.param(first.inputs[1]).data, g.param(second.inputs[1]).data
        groups = second.attrs.get("groups", 1) if second.op == "conv" else 1
        np.testing.assert_allclose(ranges(w1, 0), ranges(w2, 1, groups), rtol=1e-3)
    again = EqualizeCrossLayer().run(g.copy(), PassContext())
    assert not again.changed and again.stats["reason"].startswith("already equalized")


def test_relu6_clip_options():
    from graphopt.frontends.fx import trace

    graph = trace(chain(nn.ReLU6()), INPUTS)
    skip, _ = _run(graph, "equalize-cross-layer")
    assert skip.records[0].stats["pairs"] == 2
    assert "use clip=exact or clip=relu" in skip.records[0].stats["skipped_reasons"]["conv2d"]
    exact, _ = _run(graph, "equalize-cross-layer{clip=exact}")
    assert exact.records[0].stats["pairs"] == 3
    assert exact.graph.op_counts()["minimum"] == 1 and "clip" not in exact.graph.op_counts()
    approx, _ = _run(graph, "equalize-cross-layer{clip=relu}", same=False)  # relu6 -> relu is not exact
    assert approx.records[0].stats["pairs"] == 3 and "clip" not in approx.graph.op_counts()


def test_mobilenet_after_fold_bn_is_exact(import_model):
    graph, _, inputs = import_model("fx", "mobilenet_v2")
    ctx = PassContext(inputs=[inputs])
    folded = Pipeline.parse("fold-bn").run(graph, ctx).graph
    result = EqualizeCrossLayer(clip="exact").run(folded.copy(), ctx)
    assert result.stats["pairs"] >= 30
    for a, b in zip(folded.run(inputs), result.graph.run(inputs)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_no_equalizable_pair_says_why():
    from graphopt.frontends.fx import trace

    one = trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), INPUTS)
    stats = EqualizeCrossLayer().run(one, PassContext()).stats
    assert stats["pairs"] == 0 and "has 1 conv/linear layer" in stats["reason"]
    bn = trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval(), INPUTS)
    result = EqualizeCrossLayer().run(bn, PassContext())
    assert not result.changed and "run fold-bn first" in result.stats["reason"]
    sig = trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 4, 1)).eval(), INPUTS)
    assert "not positive-homogeneous" in EqualizeCrossLayer().run(sig, PassContext()).stats["reason"]


def test_bad_options():
    with pytest.raises(PipelineParseError, match="iterations must be >= 1"):
        Pipeline.parse("equalize-cross-layer{iterations=0}")
    assert Pipeline.parse(str(Pipeline.parse("equalize-cross-layer{clip=exact}"))) == Pipeline.parse(
        "equalize-cross-layer{clip=exact}"
    )
