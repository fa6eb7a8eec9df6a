"""The IR Graph: editing verbs, cleanup, toposort, verifier messages, printer, copies."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import GraphError, VerificationError
from graphopt.ir.graph import Graph, Parameter, Value
from graphopt.ir.types import TensorType

CONV = dict(stride=[1, 1], pads=[1, 1, 1, 1], dilation=[1, 1])


def conv_relu() -> Graph:
    """x -> conv(3->4, 3x3) -> relu -> output."""
    g = Graph("tiny")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    w = g.add_param("conv.weight", np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3) / 100)
    b = g.add_param("conv.bias", np.array([0.5, -0.5, 0.0, 1.0], np.float32))
    conv = g.add_node("conv", [x, w, b], attrs=CONV, name="conv")
    relu = g.add_node("relu", [conv.output])
    g.set_outputs([relu.output])
    return g


GOLDEN = """\
graph tiny(%x: f32[1,3,8,8]) -> (%relu)
  @conv.weight: f32[4,3,3,3]
  @conv.bias: f32[4]
  %conv: f32[1,4,8,8] = conv(%x, @conv.weight, @conv.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %relu: f32[1,4,8,8] = relu(%conv)
  return %relu"""


def names(g: Graph) -> list[str]:
    return [n.name for n in g.nodes]


# ---- building and printing ---------------------------------------------------------


def test_build_infers_types_and_fills_default_attrs():
    g = conv_relu()
    g.verify()
    assert g.type_of("conv") == TensorType((1, 4, 8, 8))
    assert g.node("conv").attrs["groups"] == 1
    assert g.producer("conv").name == "conv"
    assert g.producer("x") is None and g.producer("conv.weight") is None
    assert [n.name for n in g.users("conv")] == ["relu"]
    assert g.op_counts() == {"conv": 1, "relu": 1}
    assert g.num_parameters() == 108 + 4


def test_printer_golden_and_stable():
    g = conv_relu()
    assert str(g) == GOLDEN
    assert str(conv_relu()) == str(g) == str(g.copy())


def test_printer_marks_node_names_and_scalar_params():
    g = conv_relu()
    two = g.add_param("two", np.array(2.0, np.float32))
    g.add_node("mul", ["relu", two], name="scale", outputs=["scaled"])
    text = str(g)
    assert "@two: f32[]  (value=2)" in text
    assert "%scaled: f32[1,4,8,8] = mul(%relu, @two)  # scale" in text


def test_duplicate_and_unknown_names_are_errors():
    g = conv_relu()
    with pytest.raises(GraphError, match="value 'x' already exists"):
        g.add_input("x", TensorType((1,)))
    with pytest.raises(GraphError, match="no value named 'nope'"):
        g.add_node("relu", ["nope"])
    with pytest.raises(GraphError, match="no node named 'nope'"):
        g.node("nope")
    assert g.unique_name("conv") == "conv_1"


def test_bad_attrs_are_rejected_naming_the_op():
    g = conv_relu()
    with pytest.raises(ValueError, match="unknown attribute.*'relu'"):
        g.add_node("relu", ["x"], attrs={"alpha": 1})
    with pytest.raises(ValueError, match="unknown attribute"):
        g.set_attrs(g.node("conv"), padding=3)


# ---- editing verbs -------------------------------------------------------------------


def test_insert_on_edge_rewires_readers_and_outputs():
    g = conv_relu()
    ident = g.insert_on_edge("conv", "identity")
    assert g.node("relu").inputs == (ident.output,)
    assert names(g) == ["conv", "identity", "relu"]
    tail = g.insert_on_edge("relu", "identity", name="tail")
    assert g.outputs == (tail.output,)
    g.verify()


def test_replace_all_uses_and_bypass():
    g = conv_relu()
    ident = g.insert_on_edge("conv", "identity")
    g.bypass_node(ident)
    assert names(g) == ["conv", "relu"]
    assert g.node("relu").inputs == ("conv",)
    assert "identity" not in g.values
    assert str(g) == GOLDEN


def test_remove_node_refuses_while_read():
    g = conv_relu()
    with pytest.raises(GraphError, match=r"cannot remove node 'conv': output 'conv' is read by \['relu'\]"):
        g.remove_node(g.node("conv"))
    with pytest.raises(GraphError, match="graph output"):
        g.remove_node(g.node("relu"))


def test_rewrite_node_keeps_output_names():
    g = conv_relu()
    g.rewrite_node(g.node("relu"), "sigmoid", ["conv"])
    assert g.node("relu").op == "sigmoid"
    assert g.outputs == ("relu",)
    g.verify()


def test_set_inputs_moves_node_after_new_producer():
    g = conv_relu()
    late = g.add_node("neg", ["x"], name="late")  # placed right after its producer: before conv
    assert names(g).index("late") < names(g).index("conv")
    g.set_input(late, 0, "relu")
    assert names(g) == ["conv", "relu", "late"]
    g.set_type("late", g.type_of("relu"))  # rewiring keeps recorded types; the pass updates them
    g.verify()


def test_slice_and_set_param_update_types():
    g = conv_relu()
    g.slice_param("conv.weight", 0, [0, 2])
    g.slice_param("conv.bias", 0, [0, 2])
    assert g.type_of("conv.weight") == TensorType((2, 3, 3, 3))
    np.testing.assert_array_equal(g.param("conv.bias").data, [0.5, 0.0])
    # the recorded output type of conv is now stale: the verifier says so, naming the node
    with pytest.raises(VerificationError, match="node 'conv': output '%conv' is typed f32\\[1,4,8,8\\]"):
        g.verify()
    g.set_type("conv", TensorType((1, 2, 8, 8)))
    g.set_type("relu", TensorType((1, 2, 8, 8)))
    g.verify()


def test_cached_analyses_follow_edits():
    g = conv_relu()
    view = g.nx()
    assert set(view.nodes) == {"conv", "relu"}
    g.insert_on_edge("conv", "identity")
    assert set(g.nx().nodes) == {"conv", "identity", "relu"}
    assert g.nx() is not view


# ---- cleanup and order -----------------------------------------------------------------


def test_cleanup_removes_dead_nodes_and_params_only():
    g = conv_relu()
    unused = g.add_param("unused", np.zeros(3, np.float32))
    dead = g.add_node("neg", ["conv"], name="dead")
    g.add_node("exp", [dead.output], name="dead2")
    before = g.version
    assert g.cleanup() == {"nodes": 2, "params": 1}
    assert g.version > before
    assert names(g) == ["conv", "relu"]
    assert unused not in g.values and unused not in g.params
    assert g.inputs == ("x",) and g.outputs == ("relu",)
    assert g.cleanup() == {"nodes": 0, "params": 0}


def test_toposort_is_stable_for_ordered_graphs():
    g = conv_relu()
    g.toposort()
    assert str(g) == GOLDEN


def test_cycle_is_named_by_toposort_and_verifier():
    g = conv_relu()
    with pytest.raises(VerificationError, match=r"cycle: (conv -> relu|relu -> conv) -> "):
        g.set_input(g.node("conv"), 0, "relu")
    g.verify()  # the verb refused: nothing changed
    assert str(g) == GOLDEN
    g.node("conv")._inputs = ("relu", *g.node("conv").inputs[1:])  # bypassing the verbs
    with pytest.raises(VerificationError, match="cycle") as info:
        g.verify()
    assert info.value.node in ("conv", "relu")


def test_dangling_value_is_named_by_verifier():
    g = conv_relu()
    g._values["ghost"] = Value("ghost", TensorType((1, 4, 8, 8)))  # what a buggy pass might leave
    g.set_input(g.node("relu"), 0, "ghost")
    with pytest.raises(VerificationError, match="node 'relu': input '%ghost' is dangling") as info:
        g.verify()
    assert info.value.node == "relu"


def test_verifier_names_wrong_arity_and_bad_param_type():
    g = conv_relu()
    g.node("relu")._inputs = ("conv", "x")  # bypassing the verbs, as a broken pass would
    with pytest.raises(VerificationError, match="node 'relu': relu takes inputs \\(x\\), got 2"):
        g.verify()
    g = conv_relu()
    g._params["conv.bias"] = Parameter(np.zeros(5, np.float32))
    with pytest.raises(VerificationError, match="parameter '@conv.bias' holds f32\\[5\\]"):
        g.verify()


# ---- copies ---------------------------------------------------------------------------


def test_copy_is_independent():
    g = conv_relu()
    c = g.copy()
    with pytest.raises(ValueError, match="read-only"):
        c.param("conv.weight").data[...] = 0
    c.set_param("conv.weight", np.zeros_like(c.param("conv.weight").data))
    c.set_attrs(c.node("conv"), groups=1, stride=[2, 2])
    c.insert_on_edge("conv", "identity")
    c.metadata["touched"] = True
    assert str(g) == GOLDEN
    assert g.param("conv.weight").data.max() > 0
    assert g.node("conv").attrs["stride"] == [1, 1]
    assert "touched" not in g.metadata
    assert g.copy().version == 0
