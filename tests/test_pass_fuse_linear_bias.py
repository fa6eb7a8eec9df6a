"""fuse-linear-bias: linear(x, W) + b => linear(x, W, b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fusion_support import export_onnx, fuse_and_check, unfused

from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext
from graphopt.passes.fuse_linear_bias import FuseLinearBias


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def linear_then_add(bias: np.ndarray, *, extra_reader: bool = False) -> Graph:
    g = Graph("lin")
    x = g.add_input("x", TensorType((2, 3, 4)))
    fc = g.add_node("linear", [x, g.add_param("fc.weight", f32(5, 4))], name="fc", meta={"module": "fc"})
    y = g.add_node("add", [g.add_param("fc.bias", bias), fc.output], name="y")
    out = g.add_node("relu", [y.output], name="out")
    g.set_outputs([out.output] + ([g.add_node("exp", [fc.output], name="e").output] if extra_reader else []))
    return g


def test_golden(interpret):
    g = linear_then_add(f32(5, seed=1))
    before = g.copy()
    assert (
        str(g)
        == """\
graph lin(%x: f32[2,3,4]) -> (%out)
  @fc.weight: f32[5,4]
  @fc.bias: f32[5]
  %fc: f32[2,3,5] = linear(%x, @fc.weight)
  %y: f32[2,3,5] = add(@fc.bias, %fc)
  %out: f32[2,3,5] = relu(%y)
  return %out"""
    )
    result = FuseLinearBias().run(g, PassContext())
    assert (result.changed, result.stats) == (True, {"fused": 1})
    assert (
        str(g)
        == """\
graph lin(%x: f32[2,3,4]) -> (%out)
  @fc.weight: f32[5,4]
  @fc.bias: f32[5]
  %y: f32[2,3,5] = linear(%x, @fc.weight, @fc.bias)
  %out: f32[2,3,5] = relu(%y)
  return %out"""
    )
    assert g.node("y").meta["module"] == "fc"  # the linear's provenance moves with it
    g.verify()
    x = [f32(2, 3, 4, seed=2)]
    np.testing.assert_allclose(interpret(g, x)[0], interpret(before, x)[0], atol=1e-5, rtol=1e-5)
    assert not FuseLinearBias().run(g, PassContext()).changed


@pytest.mark.parametrize("case", ["read elsewhere", "broadcast bias", "one-element bias", "input bias"])
def test_left_alone(case):
    if case == "input bias":
        g = Graph("lin")
        x, b = g.add_input("x", TensorType((2, 4))), g.add_input("b", TensorType((5,)))
        fc = g.add_node("linear", [x, g.add_param("w", f32(5, 4))], name="fc")
        g.set_outputs([g.add_node("add", [fc.output, b], name="y").output])
    else:
        bias = {"broadcast bias": f32(3, 5), "one-element bias": f32(1)}.get(case, f32(5))
        g = linear_then_add(bias, extra_reader=case == "read elsewhere")
    text = str(g)
    assert not FuseLinearBias().run(g, PassContext()).changed
    assert str(g) == text


def test_a_biased_linear_keeps_its_bias():
    g = Graph("lin")
    fc = g.add_node(
        "linear",
        [g.add_input("x", TensorType((2, 4))), g.add_param("w", f32(5, 4)), g.add_param("b", f32(5))],
        name="fc",
    )
    g.set_outputs([g.add_node("add", [fc.output, g.add_param("c", f32(5, seed=1))], name="y").output])
    assert not FuseLinearBias().run(g, PassContext()).changed


class LinearPlusBias(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(5, 4))
        self.b = torch.nn.Parameter(torch.randn(5))

    def forward(self, x):
        return torch.relu(self.b + F.linear(x, self.w))


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_both_frontends(frontend):
    module = LinearPlusBias()
    graph = unfused(frontend, module, (2, 3, 4))
    assert graph.op_counts() == {"add": 1, "linear": 1, "relu": 1}
    result = fuse_and_check(graph, FuseLinearBias(), module)
    assert result.stats == {"fused": 1}
    assert graph.op_counts() == {"linear": 1, "relu": 1}
    assert len(graph.producer(graph.producer(graph.outputs[0]).inputs[0]).inputs) == 3


def test_onnx_import_fuses_matmul_add():
    graph = load_onnx(export_onnx(torch.nn.Linear(4, 5), torch.randn(2, 3, 4)))
    assert graph.op_counts() == {"linear": 1}
