"""fuse-gelu: x * 0.5 * (1 + erf(x / sqrt2)) => gelu(x); the tanh form => gelu{approximate=tanh}."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fusion_support import export_onnx, fuse_and_check, unfused

from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext
from graphopt.passes.fuse_gelu import FuseGelu

SQRT2 = np.float32(math.sqrt(2))


def const(g: Graph, name: str, value: float, shape=()) -> str:
    return g.add_param(name, np.full(shape, value, np.float32), trainable=False)


def erf_gelu(sqrt2=SQRT2, half_shape=(), extra_reader=False) -> Graph:
    """The ONNX export of nn.GELU before opset 20."""
    g = Graph("gelu")
    x = g.add_input("x", TensorType((2, 4)))
    d = g.add_node("div", [x, const(g, "sqrt2", sqrt2)], name="d")
    e = g.add_node("erf", [d.output], name="e")
    a = g.add_node("add", [e.output, const(g, "one", 1.0)], name="a")
    m = g.add_node("mul", [x, a.output], name="m")
    y = g.add_node("mul", [m.output, const(g, "half", 0.5, half_shape)], name="y")
    g.set_outputs([y.output] + ([g.add_node("exp", [e.output], name="ex").output] if extra_reader else []))
    return g


def test_golden(interpret):
    g = erf_gelu()
    before = g.copy()
    assert (
        str(g)
        == """\
graph gelu(%x: f32[2,4]) -> (%y)
  @sqrt2: f32[]  (frozen, value=1.41421)
  @one: f32[]  (frozen, value=1)
  @half: f32[]  (frozen, value=0.5)
  %d: f32[2,4] = div(%x, @sqrt2)
  %e: f32[2,4] = erf(%d)
  %a: f32[2,4] = add(%e, @one)
  %m: f32[2,4] = mul(%x, %a)
  %y: f32[2,4] = mul(%m, @half)
  return %y"""
    )
    result = FuseGelu().run(g, PassContext())
    assert (result.changed, result.stats) == (True, {"fused": 1})
    assert (
        str(g)
        == """\
graph gelu(%x: f32[2,4]) -> (%y)
  %y: f32[2,4] = gelu(%x) {approximate=none}
  return %y"""
    )
    g.verify()
    for seed in range(3):
        x = [np.random.default_rng(seed).standard_normal((2, 4)).astype(np.float32) * 4]
        np.testing.assert_allclose(interpret(g, x)[0], interpret(before, x)[0], atol=1e-5, rtol=1e-5)
    assert not FuseGelu().run(g, PassContext()).changed


@pytest.mark.parametrize("case", ["read elsewhere", "other constant", "broadcasting half"])
def test_left_alone(case):
    g = erf_gelu(
        sqrt2=np.float32(1.5) if case == "other constant" else SQRT2,
        half_shape=(3, 1, 1) if case == "broadcasting half" else (),
        extra_reader=case == "read elsewhere",
    )
    text = str(g)
    assert not FuseGelu().run(g, PassContext()).changed
    assert str(g) == text


class Gelu(torch.nn.Module):
    """GELU written out; `form` picks the grouping and the constants as people write them."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "bert":
            return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        if self.form == "half-first":
            return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
        if self.form == "grouped":
            return x * ((torch.erf(x / math.sqrt(2.0)) + 1.0) * 0.5)
        if self.form == "tanh":  # GPT-2's NewGELU
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        return torch.nn.functional.gelu(x, approximate=self.form)


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("form", ["bert", "half-first", "grouped", "tanh"])
def test_both_frontends(frontend, form):
    module = Gelu(form)
    graph = unfused(frontend, module, (3, 8))
    assert "gelu" not in graph.op_counts()
    result = fuse_and_check(graph, FuseGelu(), module)
    assert result.stats == {"fused": 1}
    (node,) = graph.nodes
    assert (node.op, node.attrs["approximate"]) == ("gelu", "tanh" if form == "tanh" else "none")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_onnx_import_fuses_exported_gelu(approximate):
    graph = load_onnx(export_onnx(Gelu(approximate), torch.randn(3, 8)))
    (node,) = graph.nodes
    assert (node.op, node.attrs["approximate"]) == ("gelu", approximate)
