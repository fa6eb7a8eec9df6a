"""eliminate-identity: dropout, identity, no-op shape ops, inverse permutes, reshape chains."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import NumericalVerifier, PassContext
from graphopt.passes.eliminate_identity import EliminateIdentity


def run_pass(g: Graph):
    return EliminateIdentity().run(g, PassContext())


def check_exact(before, after, interpret, seeds=(0, 1)):
    for s in seeds:
        rng = np.random.default_rng(s)
        xs = [rng.standard_normal(before.type_of(i).shape).astype(np.float32) for i in before.inputs]
        for a, b in zip(interpret(before, xs), interpret(after, xs)):
            np.testing.assert_array_equal(b, a)


def chain(g: Graph, x: str, *steps) -> str:
    for op, attrs, name in steps:
        x = g.add_node(op, [x], attrs=attrs, name=name).output
    return x


def test_golden(interpret):
    g = Graph("ids")
    x = g.add_input("x", TensorType((2, 3, 4)))
    y = chain(
        g,
        x,
        ("dropout", {"p": 0.1}, "drop"),
        ("identity", {}, "id"),
        ("reshape", {"shape": (2, 3, 4)}, "same"),
        ("permute", {"perm": (0, 2, 1)}, "p"),
        ("permute", {"perm": (0, 2, 1)}, "q"),
        ("cast", {"dtype": "float32"}, "c"),
        ("expand", {"shape": (-1, 3, 4)}, "e"),
        ("slice", {"axis": 2, "start": 0, "end": 100}, "s"),
        ("permute", {"perm": (0, 1, 2)}, "noperm"),
        ("flatten", {"start_dim": 0, "end_dim": 0}, "noflat"),
        ("reshape", {"shape": (6, 4)}, "r1"),
        ("reshape", {"shape": (2, -1)}, "r2"),
        ("relu", {}, "relu"),
    )
    g.set_outputs([y])
    before = g.copy()
    result = run_pass(g)
    assert (result.changed, result.stats) == (True, {"removed": 11, "rewrites": 10})
    assert (
        str(g)
        == """\
graph ids(%x: f32[2,3,4]) -> (%relu)
  %r2: f32[2,12] = reshape(%x) {shape=[2,-1]}
  %relu: f32[2,12] = relu(%r2)
  return %relu"""
    )
    g.verify()
    check_exact(before, g, interpret)
    assert not run_pass(g).changed


@pytest.mark.parametrize("p, q", [((0, 2, 1), (1, 0, 2)), ((2, 0, 1), (1, 2, 0)), ((1, 2, 0), (2, 1, 0))])
def test_permute_chains_compose(p, q, interpret):
    g = Graph("perm")
    x = g.add_input("x", TensorType((2, 3, 4)))
    g.set_outputs([chain(g, x, ("permute", {"perm": p}, "p"), ("permute", {"perm": q}, "q"), ("relu", {}, "r"))])
    before = g.copy()
    run_pass(g)
    g.verify()
    assert g.op_counts().get("permute", 0) <= 1
    check_exact(before, g, interpret)


def test_inner_permute_with_other_readers():
    g = Graph("perm")
    x = g.add_input("x", TensorType((2, 3, 4)))
    p = g.add_node("permute", [x], attrs={"perm": (0, 2, 1)}, name="p").output
    inv = chain(g, p, ("permute", {"perm": (0, 2, 1)}, "inv"), ("relu", {}, "r"))
    other = chain(g, p, ("permute", {"perm": (1, 0, 2)}, "other"), ("relu", {}, "r2"))
    g.set_outputs([inv, other, p])
    result = run_pass(g)
    assert result.stats == {"removed": 1, "rewrites": 1}  # the inverse goes; "other" stays as is
    assert g.node("r").inputs == ("x",) and g.node("other").inputs == ("p",)


@pytest.mark.parametrize("outer", [("reshape", {"shape": (0, 2, 2)}), ("flatten", {"start_dim": 0})])
def test_reshape_chain_needing_concrete_shape(outer, interpret):
    g = Graph("rr")
    x = g.add_input("x", TensorType((2, 3, 4)))
    g.set_outputs([chain(g, x, ("reshape", {"shape": (6, 4)}, "r1"), (*outer, "r2"), ("relu", {}, "r"))])
    before = g.copy()
    run_pass(g)
    g.verify()
    assert g.node("r2").op == "reshape" and g.node("r2").inputs == ("x",) and not g.has_node("r1")
    check_exact(before, g, interpret)


@pytest.mark.parametrize("inner", [("unsqueeze", {"axes": (1,)}), ("squeeze", {"axes": ()})])
def test_squeeze_ops(inner, interpret):
    # squeeze{axes=[]} is x; a reshape after (un)squeeze reads x directly
    g = Graph("sq")
    x = g.add_input("x", TensorType((2, 3, 4)))
    g.set_outputs([chain(g, x, (*inner, "s"), ("reshape", {"shape": (0, -1)}, "r"), ("relu", {}, "relu"))])
    before = g.copy()
    run_pass(g)
    g.verify()
    assert [n.op for n in g.nodes] == ["reshape", "relu"] and g.node("r").inputs == ("x",)
    check_exact(before, g, interpret)


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("reshape", {"shape": (3, 2, 4)}),
        ("permute", {"perm": (1, 0, 2)}),
        ("cast", {"dtype": "float64"}),
        ("expand", {"shape": (2, 2, 3, 4)}),
        ("unsqueeze", {"axes": (0,)}),
        ("slice", {"axis": 1, "start": 1, "end": 3}),
        ("slice", {"axis": 0, "start": 0, "end": 2, "step": 2}),
    ],
)
def test_real_shape_ops_stay(op, attrs):
    g = Graph("keep")
    x = g.add_input("x", TensorType((2, 3, 4)))
    g.set_outputs([chain(g, x, (op, attrs, "n"), ("relu", {}, "r"))])
    assert not run_pass(g).changed


def test_slice_with_step_that_keeps_everything(interpret):
    g = Graph("s")
    x = g.add_input("x", TensorType((1, 3)))
    g.set_outputs([chain(g, x, ("slice", {"axis": 0, "start": 0, "end": 5, "step": 2}, "n"), ("relu", {}, "r"))])
    before = g.copy()
    assert run_pass(g).stats == {"removed": 1, "rewrites": 1}
    check_exact(before, g, interpret)


def test_graph_outputs():
    g = Graph("outs")
    x = g.add_input("x", TensorType((2, 3)))
    r = g.add_node("relu", [x], name="r").output
    drop = g.add_node("dropout", [r], name="drop").output
    ident = g.add_node("identity", [x], name="ident").output
    g.set_outputs([drop, ident])
    run_pass(g)
    g.verify()
    assert g.outputs == ("r", "ident")  # dropout(relu) => relu; identity(graph input) stays


def test_identity_of_another_output_stays():
    g = Graph("outs")
    x = g.add_input("x", TensorType((2, 3)))
    r = g.add_node("relu", [x], name="r").output
    g.set_outputs([r, g.add_node("identity", [r], name="again").output])
    assert not run_pass(g).changed


# ---- both frontends ----------------------------------------------------------------------

MODELS = ["resnet18", "mobilenet_v2", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("name", MODELS)
def test_models(frontend, name, import_model, run_checked, same_outputs):
    graph, model, inputs = import_model(frontend, name)
    text = str(graph)
    out, ctx = run_checked(graph, inputs, "eliminate-identity")
    result = out.graph
    assert not {"dropout", "identity"} & set(result.op_counts())
    if frontend == "fx" and name in ("mobilenet_v2", "vit_small", "bert_small"):
        assert out.records[0].stats["removed"] > 0  # their dropout layers (the ONNX export drops them)
    if not out.changed:
        assert str(result) == text
        return
    assert ctx.instrument(NumericalVerifier).checked == ["eliminate-identity"]
    same_outputs(graph, result, inputs)
    assert not EliminateIdentity().run(result, PassContext()).changed
