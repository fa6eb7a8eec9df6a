"""convert-fp16 / convert-bf16: golden IR, float32 islands, unchanged interface, numerics in torch,
onnxruntime (float16) and TVM."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import Pipeline
from graphopt.passes.base import sqnr_db


def tiny() -> Graph:
    """linear -> gelu -> layer_norm -> softmax -> relu; the layer norm is a second output."""
    rng = np.random.default_rng(0)
    g = Graph("tiny")
    x = g.add_input("x", TensorType((2, 8)))
    w = g.add_param("fc.weight", rng.standard_normal((6, 8)).astype("float32"))
    b = g.add_param("fc.bias", rng.standard_normal(6).astype("float32"))
    y = g.add_node("gelu", [g.add_node("linear", [x, w, b]).output]).output
    gamma, beta = g.add_param("ln.weight", np.ones(6, "float32")), g.add_param("ln.bias", np.zeros(6, "float32"))
    ln = g.add_node("layer_norm", [y, gamma, beta], attrs=dict(normalized_shape=(6,))).output
    s = g.add_node("softmax", [ln], attrs=dict(axis=-1)).output
    g.set_outputs([g.add_node("relu", [s]).output, ln])
    return g


def test_golden_fp16(run_checked):
    x = np.random.default_rng(1).standard_normal((2, 8)).astype("float32")
    out, _ = run_checked(tiny(), [x], "convert-fp16")
    assert (
        str(out.graph)
        == """\
graph tiny(%x: f32[2,8]) -> (%relu, %layer_norm)
  @fc.weight: f16[6,8]
  @fc.bias: f16[6]
  @ln.weight: f32[6]
  @ln.bias: f32[6]
  %cast: f16[2,8] = cast(%x) {dtype=float16}
  %linear: f16[2,6] = linear(%cast, @fc.weight, @fc.bias)
  %gelu: f16[2,6] = gelu(%linear) {approximate=none}
  %cast_1: f32[2,6] = cast(%gelu) {dtype=float32}
  %layer_norm: f32[2,6] = layer_norm(%cast_1, @ln.weight, @ln.bias) {eps=1e-05, normalized_shape=[6]}
  %softmax: f32[2,6] = softmax(%layer_norm) {axis=-1}
  %cast_2: f16[2,6] = cast(%softmax) {dtype=float16}
  %relu_1: f16[2,6] = relu(%cast_2)
  %relu: f32[2,6] = cast(%relu_1) {dtype=float32}  # cast_3
  return %relu, %layer_norm"""
    )
    assert out.records[0].stats == {"params": 2, "casts": 4, "overflowed": 0, "float32_nodes": 2}


@pytest.mark.parametrize("name, half", [("convert-fp16", "float16"), ("convert-bf16", "bfloat16")])
def test_interface_kept_and_second_run_unchanged(name, half):
    g = tiny()
    once = Pipeline.parse(name).run(g).graph
    assert once.inputs == g.inputs and once.outputs == g.outputs
    assert [once.type_of(v) for v in (*once.inputs, *once.outputs)] == [g.type_of(v) for v in (*g.inputs, *g.outputs)]
    assert once.param("fc.weight").data.dtype.name == half
    assert not Pipeline.parse(name).run(once).changed


def test_parameter_read_by_an_island_stays_float32_and_its_half_reader_casts():
    g = Graph("shared")
    x = g.add_input("x", TensorType((2, 4)))
    p = g.add_param("p", np.linspace(-1, 1, 4, dtype="float32"))
    a = g.add_node("add", [x, p]).output
    g.set_outputs([g.add_node("mul", [a, g.add_node("exp", [p]).output]).output])
    out = Pipeline.parse("convert-fp16").run(g).graph
    assert out.param("p").data.dtype == np.float32
    readers = {n.op for n in out.users("p")}
    assert readers == {"exp", "cast"}


def test_overflowing_parameter_is_counted():
    g = Graph("big")
    x = g.add_input("x", TensorType((3,)))
    g.set_outputs([g.add_node("mul", [x, g.add_param("k", np.float32([1e5, 1, -7e4]))]).output])
    result = Pipeline.parse("convert-fp16").run(g)
    assert result.records[0].stats["overflowed"] == 2
    assert np.isinf(result.graph.param("k").data.astype(np.float32)).tolist() == [True, False, True]


# --- models: torch, onnxruntime, TVM -----------------------------------------------------

# lower bounds, dB; measured (torch / onnxruntime / TVM): fp16 digits 75/72/65, vit 58/61/45;
# bf16 digits 53/-/57, vit 40/-/44 (TVM accumulates fp16 matmuls in fp16: the lowest; onnxruntime ran no
# bfloat16 model when measured)
MIN_SQNR = {"float16": 40.0, "bfloat16": 30.0}


@pytest.fixture(scope="module")
def models():
    from graphopt.frontends.fx import trace
    from graphopt.models import get_model

    out = {}
    for name in ("digits_cnn", "vit_small"):
        model, inputs = get_model(name)
        g = trace(model, inputs)
        x = [t.numpy() for t in inputs]
        out[name] = (g, x, g.run(x))
    return out


@pytest.mark.parametrize("model_name", ["digits_cnn", "vit_small"])
def test_fp16_runs_in_torch_onnxruntime_and_tvm(models, model_name, run_checked):
    tvm_compiled = pytest.importorskip("graphopt.backends.tvm.compiled")
    g, x, ref = models[model_name]
    out, _ = run_checked(g, x, "convert-fp16")  # the numerical verifier holds the pass to its bound
    h = out.graph
    assert all(h.type_of(v).dtype == "float32" for v in (*h.inputs, *h.outputs))
    assert sum(p.data.dtype == np.float16 for p in h.params.values()) > 0
    sess = ort.InferenceSession(h.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    results = {
        "torch": h.run(x)[0],
        "onnxruntime": sess.run(None, dict(zip(h.inputs, x)))[0],
        "tvm": tvm_compiled.compile_graph(h, "x86")(*x),
    }
    for where, y in results.items():
        y = y[0] if isinstance(y, list) else y
        assert y.dtype == np.float32
        assert sqnr_db(ref[0], y) >= MIN_SQNR["float16"], where


def test_bf16_runs_in_torch_onnxruntime_and_tvm(models, run_checked):
    tvm_compiled = pytest.importorskip("graphopt.backends.tvm.compiled")
    g, x, ref = models["digits_cnn"]
    out, _ = run_checked(g, x, "convert-bf16")
    h = out.graph
    assert sqnr_db(ref[0], h.run(x)[0]) >= MIN_SQNR["bfloat16"]
    y = tvm_compiled.compile_graph(h, "x86")(*x)
    assert sqnr_db(ref[0], y[0] if isinstance(y, list) else y) >= MIN_SQNR["bfloat16"]
    # ONNX's Conv takes no bfloat16 before opset 22 and onnxruntime's CPU kernels have none: the emitter
    # computes bfloat16 ops in float32 between casts (graphopt/emit/onnx_bf16.py)
    sess = ort.InferenceSession(h.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    assert sqnr_db(ref[0], sess.run(None, dict(zip(h.inputs, x)))[0]) >= MIN_SQNR["bfloat16"]
