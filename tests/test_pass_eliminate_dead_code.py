"""eliminate-dead-code: nodes and parameters no output depends on go; inputs and outputs stay."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import NumericalVerifier, PassContext, Pipeline, default_instruments
from graphopt.passes.eliminate_dead_code import EliminateDeadCode


def dead_graph() -> Graph:
    g = Graph("dead")
    x = g.add_input("x", TensorType((2, 3)))
    g.add_input("unused", TensorType((4,)))
    w = g.add_param("w", np.ones((3, 3), np.float32))
    fc = g.add_node("linear", [x, w], name="fc").output
    side = g.add_node("linear", [x, g.add_param("side.weight", np.ones((5, 3), np.float32))], name="side")
    g.add_node("relu", [side.output], name="side_relu")
    g.add_param("stale", np.zeros(7, np.float32))
    g.set_outputs([g.add_node("relu", [fc], name="r").output, x])
    return g


def test_golden(interpret):
    g = dead_graph()
    before = g.copy()
    assert (
        str(g)
        == """\
graph dead(%x: f32[2,3], %unused: f32[4]) -> (%r, %x)
  @w: f32[3,3]
  @side.weight: f32[5,3]
  @stale: f32[7]
  %side: f32[2,5] = linear(%x, @side.weight)
  %side_relu: f32[2,5] = relu(%side)
  %fc: f32[2,3] = linear(%x, @w)
  %r: f32[2,3] = relu(%fc)
  return %r, %x"""
    )
    result = EliminateDeadCode().run(g, PassContext())
    assert (result.changed, result.stats) == (True, {"nodes": 2, "params": 2})
    assert (
        str(g)
        == """\
graph dead(%x: f32[2,3], %unused: f32[4]) -> (%r, %x)
  @w: f32[3,3]
  %fc: f32[2,3] = linear(%x, @w)
  %r: f32[2,3] = relu(%fc)
  return %r, %x"""
    )
    g.verify()
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(4, np.float32)]
    for a, b in zip(interpret(before, xs), interpret(g, xs)):
        np.testing.assert_array_equal(a, b)
    again = EliminateDeadCode().run(g, PassContext())
    assert (again.changed, again.stats) == (False, {"nodes": 0, "params": 0})


def test_parameter_output_is_kept():
    g = Graph("p")
    g.add_input("x", TensorType((1,)))
    g.set_outputs([g.add_param("table", np.ones(3, np.float32))])
    assert not EliminateDeadCode().run(g, PassContext()).changed
    assert g.outputs == ("table",) and g.is_param("table")


def test_pipeline_leaves_input_graph_alone():
    g = dead_graph()
    text = str(g)
    out = Pipeline.parse("eliminate-dead-code").run(g)
    assert str(g) == text and out.records[0].stats == {"nodes": 2, "params": 2}


# ---- both frontends ----------------------------------------------------------------------

MODELS = ["resnet18", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("name", MODELS)
def test_models_after_fold_bn(frontend, name, import_model):
    graph, model, inputs = import_model(frontend, name)
    ctx = PassContext(instruments=default_instruments(), inputs=[inputs])
    out = Pipeline.parse("fold-bn,eliminate-dead-code").run(graph, ctx)
    result = out.graph
    result.verify()
    assert result.inputs == graph.inputs and result.outputs == graph.outputs
    assert not EliminateDeadCode().run(result, PassContext()).changed
    if out.records[1].changed:
        assert "eliminate-dead-code" in ctx.instrument(NumericalVerifier).checked
    rng = np.random.default_rng(1)
    x = [rng.standard_normal(a.shape).astype(a.dtype) if a.dtype.kind == "f" else a for a in inputs]
    for a, b in zip(graph.run(x), result.run(x)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
