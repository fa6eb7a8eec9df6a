"""fold-constants: parameter-only nodes become parameters; x*1, x+(-0.0), x-0.0, x/1 disappear."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import NumericalVerifier, PassContext, Pipeline
from graphopt.passes.fold_constants import FoldConstants


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def consts_graph() -> Graph:
    g = Graph("consts")
    x = g.add_input("x", TensorType((2, 4)))
    t = g.add_node("permute", [g.add_param("fc.weight_t", f32(4, 3))], attrs={"perm": (1, 0)}, name="t")
    fc = g.add_node("linear", [x, t.output], name="fc")
    m = g.add_node("mul", [fc.output, g.add_param("one", np.float32(1), trainable=False)], name="m")
    s = g.add_node(
        "mul",
        [g.add_param("a", f32(3, seed=1), trainable=False), g.add_param("b", f32(3, seed=2), trainable=False)],
        name="s",
    )
    y = g.add_node("mul", [m.output, s.output], name="y")
    z = g.add_node("add", [y.output, g.add_param("zero", np.full((1, 3), -0.0, np.float32))], name="z")  # x + -0.0
    w = g.add_node("add", [z.output, g.add_param("wide", np.zeros((4, 2, 3), np.float32))], name="w")
    g.set_outputs([w.output])
    return g


def run_pass(g: Graph, **options):
    return FoldConstants(**options).run(g, PassContext())


def check_exact(before, after, interpret, seeds=(0, 1, 2)):
    for s in seeds:
        rng = np.random.default_rng(s)
        xs = [rng.standard_normal(before.type_of(i).shape).astype(before.type_of(i).dtype) for i in before.inputs]
        for a, b in zip(interpret(before, xs), interpret(after, xs)):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


def test_golden(interpret):
    g = consts_graph()
    before = g.copy()
    assert (
        str(g)
        == """\
graph consts(%x: f32[2,4]) -> (%w)
  @fc.weight_t: f32[4,3]
  @one: f32[]  (frozen, value=1)
  @a: f32[3]  (frozen)
  @b: f32[3]  (frozen)
  @zero: f32[1,3]
  @wide: f32[4,2,3]
  %s: f32[3] = mul(@a, @b)
  %t: f32[3,4] = permute(@fc.weight_t) {perm=[1,0]}
  %fc: f32[2,3] = linear(%x, %t)
  %m: f32[2,3] = mul(%fc, @one)
  %y: f32[2,3] = mul(%m, %s)
  %z: f32[2,3] = add(%y, @zero)
  %w: f32[4,2,3] = add(%z, @wide)
  return %w"""
    )
    result = run_pass(g)
    assert (result.changed, result.stats) == (True, {"folded": 2, "simplified": 2, "too_large": 0})
    assert (
        str(g)
        == """\
graph consts(%x: f32[2,4]) -> (%w)
  @wide: f32[4,2,3]
  @s_folded: f32[3]  (frozen)
  @t_folded: f32[3,4]
  %fc: f32[2,3] = linear(%x, @t_folded)
  %y: f32[2,3] = mul(%fc, @s_folded)
  %w: f32[4,2,3] = add(%y, @wide)
  return %w"""
    )
    g.verify()
    check_exact(before, g, interpret)
    again = run_pass(g)
    assert (again.changed, again.stats) == (False, {"folded": 0, "simplified": 0, "too_large": 0})


def test_size_cap_leaves_large_results():
    g = consts_graph()
    result = run_pass(g, max_elements=5)  # the permute makes 12 elements, the mul 3
    assert result.stats == {"folded": 1, "simplified": 2, "too_large": 1}
    assert g.node("t").op == "permute"


def test_trainable_policy():
    g = Graph("trainable")
    x = g.add_input("x", TensorType((3,)))
    w, c = g.add_param("w", f32(3)), g.add_param("c", f32(3, seed=1), trainable=False)
    outs = [
        g.add_node("reshape", [w], attrs={"shape": (3,)}, name="keep").output,  # @w trainable
        g.add_node("mul", [w, c], name="mixed").output,  # one trainable input
        g.add_node("add", [c, c], name="frozen").output,  # only frozen inputs
        g.add_node("cast", [w], attrs={"dtype": "int64"}, name="ints").output,
    ]  # not floating
    g.set_outputs([x] + [g.add_node("neg", [o]).output for o in outs])
    run_pass(g)
    trainable = {k: p.trainable for k, p in g.params.items()}
    assert trainable == {"keep_folded": True, "mixed_folded": True, "frozen_folded": False, "ints_folded": False}


def test_storage_ops_opaque_and_outputs_are_not_folded():
    g = Graph("kept")
    q = g.add_param("q", np.array([[1, -2], [3, 4]], np.int8))
    deq = g.add_node(
        "dequantize", [q, g.add_param("scale", np.float32(0.5)), g.add_param("zp", np.int8(0))], name="deq"
    )
    half = g.add_node("cast", [g.add_param("h", f32(2).astype(np.float16))], attrs={"dtype": "float32"}, name="widen")
    opaque = g.add_node(
        "opaque",
        [g.add_param("o", f32(2))],
        name="op",
        attrs={"framework": "onnx", "op_type": "Foo", "domain": "", "onnx_attrs": {}},
        output_types=[TensorType((2,))],
    )
    out = g.add_node("neg", [g.add_param("n", f32(2))], name="out")
    g.set_outputs([deq.output, half.output, opaque.output, out.output])
    text = str(g)
    result = run_pass(g)
    assert (result.changed, str(g)) == (False, text)


@pytest.mark.parametrize(
    "op, const, first, kept",
    [
        ("mul", np.ones((2, 3), np.float32), False, False),  # x * 1 (same shape)
        ("mul", np.ones((1, 3), np.float32), True, False),  # 1 * x (broadcast, shape unchanged)
        ("add", np.full((3,), -0.0, np.float32), False, False),  # x + (-0.0)
        ("add", np.float32(-0.0), True, False),  # -0.0 + x
        ("add", np.zeros((3,), np.float32), False, True),  # x + 0.0: -0.0 becomes +0.0
        ("add", np.int64(0), True, True),  # 0 + x: an int 0 promotes to +0.0
        ("sub", np.zeros((1, 1), np.float32), False, False),  # x - 0.0
        ("sub", np.float32(-0.0), False, True),  # x - (-0.0): -0.0 becomes +0.0
        ("mul", np.float32(0), False, True),  # x * 0 is not 0 (inf, NaN, -x)
        ("div", np.ones((3,), np.float32), False, False),  # x / 1
        ("sub", np.float32(0), True, True),  # 0 - x = -x
        ("div", np.float32(1), True, True),  # 1 / x
        ("mul", np.array([1, 1, 2], np.float32), False, True),  # not all ones
        ("add", np.zeros((4, 2, 3), np.float32), False, True),  # broadcast grows x
        ("mul", np.ones((3,), np.float64), False, True),  # promotes the dtype to float64
    ],
)
def test_neutral_arithmetic(op, const, first, kept, interpret):
    g = Graph("neutral")
    x = g.add_input("x", TensorType((2, 3)))
    c = g.add_param("c", const)
    y = g.add_node(op, [c, x] if first else [x, c], name="y")
    g.set_outputs([g.add_node("relu", [y.output], name="r").output])
    before = g.copy()
    result = run_pass(g)
    assert result.changed is not kept
    assert g.has_node("y") is kept
    check_exact(before, g, interpret)


def test_neutral_op_defining_a_graph_output_keeps_it_defined_by_a_node():
    g = Graph("out")
    x = g.add_input("x", TensorType((2,)))
    g.set_outputs([g.add_node("mul", [x, g.add_param("one", np.ones(2, np.float32))], name="y").output])
    assert not run_pass(g).changed  # the output would become the input itself


def test_pipeline_text_round_trips():
    p = Pipeline.parse("fold-constants{max_elements=100}")
    assert p.passes == (FoldConstants(max_elements=100),)
    assert Pipeline.parse(str(p)) == p


# ---- both frontends ----------------------------------------------------------------------

MODELS = ["resnet18", "mobilenet_v2", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("name", MODELS)
def test_models(frontend, name, import_model, run_checked, same_outputs):
    graph, model, inputs = import_model(frontend, name)
    text = str(graph)
    out, ctx = run_checked(graph, inputs, "fold-constants")
    folded = out.graph
    stats = out.records[0].stats
    if out.records[0].changed:
        assert ctx.instrument(NumericalVerifier).checked == ["fold-constants"]
    assert stats["too_large"] == 0
    assert not any(
        n.op != "opaque"
        and n.inputs
        and all(folded.is_param(v) for v in n.inputs)
        and n.op not in ("quantize", "dequantize")
        and not set(n.outputs) & set(folded.outputs)
        for n in folded.nodes
    )
    if not out.changed:
        assert str(folded) == text
        return
    same_outputs(graph, folded, inputs)
    assert not FoldConstants().run(folded, PassContext()).changed
