"""fold-bn: batch norm folded into conv / linear / concat-of-convs; exact to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import NumericalVerifier, PassContext, Pipeline, default_instruments
from graphopt.passes.fold_bn import FoldBatchNorm

CONV = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1))


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def add_bn(g: Graph, x: str, channels: int, rng, name: str = "bn") -> str:
    stats = [
        g.add_param(f"{name}.weight", _rand(rng, channels)),
        g.add_param(f"{name}.bias", _rand(rng, channels)),
        g.add_param(f"{name}.running_mean", _rand(rng, channels), trainable=False),
        g.add_param(f"{name}.running_var", np.abs(_rand(rng, channels)) + 0.5, trainable=False),
    ]
    return g.add_node("batch_norm", [x, *stats], name=name).output


def conv_bn(groups: int = 1, bias: bool = False, seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("conv_bn")
    x = g.add_input("x", TensorType((2, 4, 8, 8)))
    ins = [x, g.add_param("conv.weight", _rand(rng, 4, 4 // groups, 3, 3))]
    if bias:
        ins.append(g.add_param("conv.bias", _rand(rng, 4)))
    c = g.add_node("conv", ins, attrs=dict(CONV, groups=groups), name="conv").output
    y = g.add_node("relu", [add_bn(g, c, 4, rng)], name="relu").output
    g.set_outputs([y])
    return g


def linear_bn(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("linear_bn")
    x = g.add_input("x", TensorType((3, 5)))
    fc = g.add_node(
        "linear", [x, g.add_param("fc.weight", _rand(rng, 6, 5)), g.add_param("fc.bias", _rand(rng, 6))], name="fc"
    ).output
    g.set_outputs([add_bn(g, fc, 6, rng)])
    return g


def concat_bn(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("concat_bn")
    x = g.add_input("x", TensorType((1, 3, 6, 6)))
    a = g.add_node("conv", [x, g.add_param("a.weight", _rand(rng, 2, 3, 3, 3))], attrs=CONV, name="a").output
    b = g.add_node(
        "conv",
        [x, g.add_param("b.weight", _rand(rng, 3, 3, 3, 3)), g.add_param("b.bias", _rand(rng, 3))],
        attrs=CONV,
        name="b",
    ).output
    cat = g.add_node("concat", [a, b], attrs={"axis": 1}, name="cat").output
    g.set_outputs([add_bn(g, cat, 5, rng)])
    return g


def fold(g: Graph):
    return FoldBatchNorm().run(g, PassContext())


def check_exact(before: Graph, after: Graph, interpret, seeds=(0, 1, 2)):
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        xs = [rng.standard_normal(before.type_of(i).shape).astype(np.float32) for i in before.inputs]
        for a, b in zip(interpret(before, xs), interpret(after, xs)):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


# ---- golden IR ---------------------------------------------------------------------


def test_golden_conv_without_bias_gets_one():
    g = conv_bn()
    assert (
        str(g)
        == """\
graph conv_bn(%x: f32[2,4,8,8]) -> (%relu)
  @conv.weight: f32[4,4,3,3]
  @bn.weight: f32[4]
  @bn.bias: f32[4]
  @bn.running_mean: f32[4]  (frozen)
  @bn.running_var: f32[4]  (frozen)
  %conv: f32[2,4,8,8] = conv(%x, @conv.weight) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %bn: f32[2,4,8,8] = batch_norm(%conv, @bn.weight, @bn.bias, @bn.running_mean, @bn.running_var) {eps=1e-05}
  %relu: f32[2,4,8,8] = relu(%bn)
  return %relu"""
    )
    result = fold(g)
    assert (result.changed, result.stats) == (True, {"folded": 1, "skipped": 0})
    assert (
        str(g)
        == """\
graph conv_bn(%x: f32[2,4,8,8]) -> (%relu)
  @conv.weight: f32[4,4,3,3]
  @conv.bias: f32[4]
  %conv: f32[2,4,8,8] = conv(%x, @conv.weight, @conv.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %relu: f32[2,4,8,8] = relu(%conv)
  return %relu"""
    )


def test_golden_concat_folds_each_slice():
    g = concat_bn()
    fold(g)
    assert (
        str(g)
        == """\
graph concat_bn(%x: f32[1,3,6,6]) -> (%cat)
  @a.weight: f32[2,3,3,3]
  @b.weight: f32[3,3,3,3]
  @b.bias: f32[3]
  @a.bias: f32[2]
  %b: f32[1,3,6,6] = conv(%x, @b.weight, @b.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %a: f32[1,2,6,6] = conv(%x, @a.weight, @a.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %cat: f32[1,5,6,6] = concat(%a, %b) {axis=1}
  return %cat"""
    )


# ---- numerics and post-conditions on hand-built graphs ---------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: conv_bn(),
        lambda: conv_bn(bias=True),
        lambda: conv_bn(groups=2),
        lambda: conv_bn(groups=4, bias=True),
        linear_bn,
        concat_bn,
    ],
    ids=["conv", "conv-bias", "grouped", "depthwise", "linear", "concat"],
)
def test_fold_is_exact_and_idempotent(build, interpret):
    g = build()
    before = g.copy()
    result = fold(g)
    g.verify()
    assert result.stats == {"folded": 1, "skipped": 0}
    assert "batch_norm" not in g.op_counts()
    check_exact(before, g, interpret)
    again = fold(g)
    assert (again.changed, again.stats) == (False, {"folded": 0, "skipped": 0})


def test_fold_in_float64_then_cast_back():
    g = conv_bn(bias=True)
    g.set_param("conv.weight", g.param("conv.weight").data.astype(np.float16))
    g.set_param("conv.bias", g.param("conv.bias").data.astype(np.float16))
    w, b = (g.param(n).data.astype(np.float64) for n in ("conv.weight", "conv.bias"))
    gamma, beta, mean, var = (
        g.param(f"bn.{k}").data.astype(np.float64) for k in ("weight", "bias", "running_mean", "running_var")
    )
    fold(g)
    s = gamma / np.sqrt(var + 1e-5)
    assert g.param("conv.weight").data.dtype == np.float16
    np.testing.assert_array_equal(g.param("conv.weight").data, (w * s[:, None, None, None]).astype(np.float16))
    np.testing.assert_array_equal(g.param("conv.bias").data, ((b - mean) * s + beta).astype(np.float16))


def test_bn_whose_input_has_other_readers_is_skipped(interpret):
    g = conv_bn()
    conv_out = g.node("conv").output
    extra = g.add_node("sigmoid", [conv_out], name="side").output
    g.set_outputs([g.outputs[0], extra])
    text = str(g)
    result = fold(g)
    assert (result.changed, result.stats) == (False, {"folded": 0, "skipped": 1})
    assert str(g) == text


def test_standalone_bn_and_linear_on_3d_stay():
    rng = np.random.default_rng(0)
    g = Graph("standalone")
    x = g.add_input("x", TensorType((2, 3, 4, 4)))
    y = add_bn(g, x, 3, rng, "bn0")  # reads a graph input
    t = g.add_input("t", TensorType((2, 4, 5)))
    fc = g.add_node("linear", [t, g.add_param("fc.weight", _rand(rng, 5, 5))], name="fc").output
    z = add_bn(g, fc, 4, rng, "bn1")  # BN over axis 1 of [N, L, F]: not linear's features
    g.set_outputs([y, z])
    result = fold(g)
    assert (result.changed, result.stats) == (False, {"folded": 0, "skipped": 2})


def test_concat_with_a_non_conv_input_is_skipped():
    g = concat_bn()
    a = g.node("a")
    r = g.insert_on_edge(a.output, "relu", name="r")
    assert g.users(r.output)[0].op == "concat"
    assert fold(g).stats == {"folded": 0, "skipped": 1}


def test_shared_weight_is_copied_not_overwritten(interpret):
    rng = np.random.default_rng(0)
    g = Graph("tied")
    x = g.add_input("x", TensorType((1, 2, 5, 5)))
    w = g.add_param("w", _rand(rng, 2, 2, 3, 3))
    c1 = g.add_node("conv", [x, w], attrs=CONV, name="c1").output
    c2 = g.add_node("conv", [x, w], attrs=CONV, name="c2").output
    g.set_outputs([add_bn(g, c1, 2, rng, "bn1"), c2])
    before = g.copy()
    assert fold(g).stats == {"folded": 1, "skipped": 0}
    assert g.node("c2").inputs[1] == "w" and g.node("c1").inputs[1] != "w"
    np.testing.assert_array_equal(g.param("w").data, before.param("w").data)
    check_exact(before, g, interpret)


# ---- both frontends ----------------------------------------------------------------------

MODELS = ["resnet18", "mobilenet_v2", "digits_cnn", "digits_mlp"]


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("name", MODELS)
def test_models_fold_every_bn(frontend, name, import_model):
    graph, model, inputs = import_model(frontend, name)
    assert graph.op_counts().get("batch_norm", 0) > 0
    text = str(graph)
    ctx = PassContext(instruments=default_instruments(), inputs=[inputs])
    out = Pipeline.parse("fold-bn").run(graph, ctx)
    assert str(graph) == text  # the pipeline works on a copy
    folded = out.graph
    folded.verify()
    assert "batch_norm" not in folded.op_counts()
    assert out.records[0].stats["skipped"] == 0
    assert ctx.instrument(NumericalVerifier).checked == ["fold-bn"]
    rng = np.random.default_rng(1)  # the verifier checked the example inputs; one more seeded set
    x = [rng.standard_normal(a.shape).astype(a.dtype) for a in inputs]
    for a, b in zip(graph.run(x), folded.run(x)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    again = FoldBatchNorm().run(folded, PassContext())
    assert not again.changed


def test_users_torch_model_is_untouched():
    from graphopt.frontends.fx import trace
    from graphopt.models import get_model

    model, inputs = get_model("digits_cnn")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    graph = trace(model, inputs)
    Pipeline.parse("fold-bn").run(graph)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not model.training
