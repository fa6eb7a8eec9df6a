"""fuse-layer-norm: (x - E[x]) / sqrt(Var[x] + eps) * w + b => layer_norm(x, w, b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fusion_support import export_onnx, fuse_and_check, unfused

from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext
from graphopt.passes.fuse_layer_norm import FuseLayerNorm


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def const(g: Graph, name: str, value: float) -> str:
    return g.add_param(name, np.float32(value), trainable=False)


def onnx_style(dims=(-1,), bias_shape=(4,), extra_reader=False) -> Graph:
    """The ONNX export of a hand-written LayerNorm: one `x - E[x]`, read twice."""
    g = Graph("ln")
    x = g.add_input("x", TensorType((2, 3, 4)))
    mean = g.add_node("mean", [x], attrs={"dims": dims, "keepdim": True}, name="mean")
    c = g.add_node("sub", [x, mean.output], name="c")
    sq = g.add_node("pow", [c.output, const(g, "two", 2.0)], name="sq")
    var = g.add_node("mean", [sq.output], attrs={"dims": dims, "keepdim": True}, name="var")
    shifted = g.add_node("add", [var.output, const(g, "eps", 1e-5)], name="shifted")
    std = g.add_node("sqrt", [shifted.output], name="std")
    n = g.add_node("div", [c.output, std.output], name="n")
    w = g.add_node("mul", [g.add_param("ln.weight", f32(4, seed=1)), n.output], name="w")
    y = g.add_node("add", [w.output, g.add_param("ln.bias", f32(*bias_shape, seed=2))], name="y")
    g.set_outputs([y.output] + ([g.add_node("exp", [var.output], name="ex").output] if extra_reader else []))
    return g


def test_golden(interpret):
    g = onnx_style()
    before = g.copy()
    assert (
        str(g)
        == """\
graph ln(%x: f32[2,3,4]) -> (%y)
  @two: f32[]  (frozen, value=2)
  @eps: f32[]  (frozen, value=1e-05)
  @ln.weight: f32[4]
  @ln.bias: f32[4]
  %mean: f32[2,3,1] = mean(%x) {dims=[-1], keepdim=true}
  %c: f32[2,3,4] = sub(%x, %mean)
  %sq: f32[2,3,4] = pow(%c, @two)
  %var: f32[2,3,1] = mean(%sq) {dims=[-1], keepdim=true}
  %shifted: f32[2,3,1] = add(%var, @eps)
  %std: f32[2,3,1] = sqrt(%shifted)
  %n: f32[2,3,4] = div(%c, %std)
  %w: f32[2,3,4] = mul(@ln.weight, %n)
  %y: f32[2,3,4] = add(%w, @ln.bias)
  return %y"""
    )
    result = FuseLayerNorm().run(g, PassContext())
    assert (result.changed, result.stats) == (True, {"fused": 1, "affine": 2})
    assert (
        str(g)
        == """\
graph ln(%x: f32[2,3,4]) -> (%y)
  @ln.weight: f32[4]
  @ln.bias: f32[4]
  %y: f32[2,3,4] = layer_norm(%x, @ln.weight, @ln.bias) {eps=1e-05, normalized_shape=[4]}
  return %y"""
    )
    g.verify()
    for seed in range(3):
        x = [f32(2, 3, 4, seed=seed) * 3]
        np.testing.assert_allclose(interpret(g, x)[0], interpret(before, x)[0], atol=1e-5, rtol=1e-5)
    assert not FuseLayerNorm().run(g, PassContext()).changed


@pytest.mark.parametrize("case", ["channels", "variance read elsewhere"])
def test_left_alone(case):
    g = onnx_style(dims=(1,) if case == "channels" else (-1,), extra_reader=case == "variance read elsewhere")
    text = str(g)
    assert not FuseLayerNorm().run(g, PassContext()).changed
    assert str(g) == text


def test_a_bias_of_another_shape_stays_outside():
    g = onnx_style(bias_shape=(3, 4))
    assert FuseLayerNorm().run(g, PassContext()).stats == {"fused": 1, "affine": 1}
    assert [n.op for n in g.nodes] == ["layer_norm", "add"]


class LayerNorm(torch.nn.Module):
    """LayerNorm over the last dim written out; `form` picks how."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.weight = torch.nn.Parameter(torch.randn(8))
        self.bias = torch.nn.Parameter(torch.randn(8))

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        if self.form == "rsqrt":  # (x - u) * rsqrt(E[(x - u)(x - u)] + eps), no affine
            c = x - u
            return c * torch.rsqrt((c * c).mean(-1, keepdim=True) + 1e-5)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        n = (x - u) / torch.sqrt(s + 1e-5)
        return n * self.weight if self.form == "weight" else self.weight * n + self.bias


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("form, affine", [("affine", 2), ("weight", 1), ("rsqrt", 0)])
def test_both_frontends(frontend, form, affine):
    module = LayerNorm(form)
    graph = unfused(frontend, module, (2, 3, 8))
    assert "layer_norm" not in graph.op_counts()
    result = fuse_and_check(graph, FuseLayerNorm(), module)
    assert result.stats == {"fused": 1, "affine": affine}
    (node,) = graph.nodes
    assert (node.op, len(node.inputs), node.attrs["normalized_shape"]) == ("layer_norm", 1 + affine, [8])


class AffineAfterLayerNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(8, elementwise_affine=False)
        self.scale = torch.nn.Parameter(torch.randn(8))
        self.shift = torch.nn.Parameter(torch.randn(8))

    def forward(self, x):
        return self.norm(x) * self.scale + self.shift


def test_affine_after_a_traced_layer_norm_is_absorbed():
    module = AffineAfterLayerNorm()
    graph = unfused("fx", module, (2, 8))
    assert fuse_and_check(graph, FuseLayerNorm(), module).stats == {"fused": 0, "affine": 2}
    assert [n.op for n in graph.nodes] == ["layer_norm"]


def test_onnx_import_fuses_a_written_out_layer_norm():
    graph = load_onnx(export_onnx(LayerNorm("affine"), torch.randn(2, 3, 8)))
    assert graph.op_counts() == {"layer_norm": 1}


class Block(torch.nn.Module):
    """A transformer MLP block written out by hand: F.linear + bias, erf GELU, layer norm."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8) / 3)
        self.b = torch.nn.Parameter(torch.randn(8))
        self.norm = LayerNorm("affine")

    def forward(self, x):
        h = torch.nn.functional.linear(x, self.w) + self.b
        h = h * 0.5 * (1.0 + torch.erf(h / 1.4142135623730951))
        return self.norm(x + h)


def test_default_pipeline_ends_a_module_and_its_export_alike(run_checked):
    from graphopt.defaults import DEFAULT_PIPELINE

    module, x = Block(), torch.randn(2, 3, 8)
    imported = load_onnx(export_onnx(module, x))  # fused on import
    result, _ = run_checked(unfused("fx", module, (2, 3, 8)), [x.numpy()], DEFAULT_PIPELINE)
    want = {"add": 1, "gelu": 1, "layer_norm": 1, "linear": 1}
    assert result.graph.op_counts() == imported.op_counts() == want
