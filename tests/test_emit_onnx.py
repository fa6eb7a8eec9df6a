"""ONNX emitter: every canonical op, built with the IR verbs, emits a model that passes the
full checker and that onnxruntime runs to the op references' results; opsets, symbolic
dims, opaque nodes, errors and atomic saving."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from graphopt.backends.onnxruntime import run_onnx
from graphopt.emit import onnx as emit_mod
from graphopt.emit.onnx import DEFAULT_OPSET, emit_onnx, save_onnx
from graphopt.emit.onnx_ops import RULES
from graphopt.errors import EmitError
from graphopt.ir.graph import Graph
from graphopt.ir.ops import OPS, ValueRef
from graphopt.ir.types import TensorType

try:  # written alongside; the checks through graph.run skip until it imports
    import graphopt.emit.torch  # noqa: F401

    HAS_TORCH_EMITTER = True
except Exception:
    HAS_TORCH_EMITTER = False
RNG = np.random.default_rng(0)


def f32(*shape):
    return TensorType(shape, "float32")


def rand(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def feeds_for(graph, sizes=None):
    out = []
    for name in graph.inputs:
        t = graph.type_of(name)
        shape = [d if isinstance(d, int) else (sizes or {}).get(d, 3) for d in t.shape]
        if t.dtype.startswith("float"):
            out.append(rand(*shape, positive=name.startswith("pos")).astype(t.dtype))
        else:
            out.append(RNG.integers(0, 5, shape).astype(t.dtype))
    return out


def assert_close(got, want, tol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


# --- one small graph per canonical op (builders take a fresh Graph, return it) ----------------------


def unary(op, positive=False):
    def build(g):
        x = g.add_input("pos_x" if positive else "x", f32(2, 3, 4))
        g.set_outputs([g.add_node(op, [x]).output])

    return build


def binary(op, positive=False, b_shape=(4,)):
    def build(g):
        a = g.add_input("pos_a" if positive else "a", f32(2, 3, 4))
        b = g.add_param("b", rand(*b_shape, positive=positive))
        c = g.add_input("c", f32(2, 3, 4))
        y = g.add_node(op, [a, b]).output
        g.set_outputs([g.add_node(op, [y, c]).output if op != "pow" else y])

    return build


def single(op, in_shape, attrs=None, params=(), dtype="float32"):
    def build(g):
        x = g.add_input("x", TensorType(in_shape, dtype))
        ps = [g.add_param(f"p{i}", p) for i, p in enumerate(params)]
        n = g.add_node(op, [x, *ps], attrs=attrs)
        g.set_outputs(list(n.outputs))

    return build


def conv(g):
    x = g.add_input("x", f32(2, 4, 9, 9))
    wt, b = g.add_param("conv.weight", rand(6, 2, 3, 3)), g.add_param("conv.bias", rand(6))
    y = g.add_node("conv", [x, wt, b], attrs=dict(stride=[2, 1], pads=[1, 0, 2, 1], dilation=[1, 2], groups=2))
    g.set_outputs([y.output])


def linear(g):
    x2, x3 = g.add_input("x2", f32(3, 8)), g.add_input("x3", f32(2, 3, 8))
    wt, b = g.add_param("fc.weight", rand(5, 8)), g.add_param("fc.bias", rand(5))
    g.set_outputs(
        [
            g.add_node("linear", [x2, wt, b]).output,
            g.add_node("linear", [x3, wt]).output,
            g.add_node("linear", [x3, wt, b]).output,
        ]
    )


def matmul(g):
    a, b = g.add_input("a", f32(2, 3, 4)), g.add_input("b", f32(4, 5))
    g.set_outputs([g.add_node("matmul", [a, b]).output])


def batch_norm(g):
    x = g.add_input("x", f32(2, 4, 5, 5))
    ps = [g.add_param(n, rand(4, positive=n == "var")) for n in ("w", "b", "mean", "var")]
    g.set_outputs([g.add_node("batch_norm", [x, *ps], attrs={"eps": 1e-3}).output])


def layer_norm(g):
    x = g.add_input("x", f32(2, 3, 6))
    wt, b = g.add_param("ln.weight", rand(3, 6)), g.add_param("ln.bias", rand(3, 6))
    y1 = g.add_node("layer_norm", [x, wt, b], attrs={"normalized_shape": [3, 6]}).output
    y2 = g.add_node("layer_norm", [x], attrs={"normalized_shape": [6], "eps": 1e-3}).output
    g.set_outputs([y1, y2])


def gelu(g):
    x = g.add_input("x", f32(2, 3, 4))
    g.set_outputs([g.add_node("gelu", [x]).output, g.add_node("gelu", [x], attrs={"approximate": "tanh"}).output])


def clip(g):
    x = g.add_input("x", f32(2, 3, 4))
    i = g.add_input("i", TensorType((2, 3), "int64"))
    g.set_outputs(
        [
            g.add_node("clip", [x], attrs={"min": -0.5, "max": 0.5}).output,
            g.add_node("clip", [x], attrs={"max": 0.1}).output,
            g.add_node("clip", [x], attrs={"min": 0.2}).output,
            g.add_node("clip", [i], attrs={"min": 1, "max": 3}).output,
        ]
    )


def adaptive(op):
    def build(g):
        x = g.add_input("x", f32(2, 3, 8, 8))
        g.set_outputs(
            [
                g.add_node(op, [x], attrs={"output_size": [1, 1]}).output,
                g.add_node(op, [x], attrs={"output_size": [2, 4]}).output,
            ]
        )

    return build


def split(g):
    x = g.add_input("x", f32(2, 7))
    g.set_outputs(list(g.add_node("split", [x], attrs={"axis": 1, "sizes": [3, 4]}).outputs))


def concat(g):
    x = g.add_input("x", f32(2, 3))
    p = g.add_param("p", rand(2, 2))
    g.set_outputs([g.add_node("concat", [x, p, x], attrs={"axis": -1}).output])


def flatten(g):
    x = g.add_input("x", f32(2, 3, 4, 5))
    g.set_outputs(
        [
            g.add_node("flatten", [x]).output,
            g.add_node("flatten", [x], attrs={"start_dim": 0, "end_dim": 1}).output,
            g.add_node("flatten", [x], attrs={"start_dim": 1, "end_dim": 2}).output,
        ]
    )


def axes_op(op, in_shape, *axes):
    def build(g):
        x = g.add_input("x", f32(*in_shape))
        g.set_outputs([g.add_node(op, [x], attrs={"axes": a}).output for a in axes])

    return build


def slice_select(op):
    def build(g):
        x = g.add_input("x", f32(4, 6, 5))
        if op == "slice":
            outs = [
                g.add_node("slice", [x], attrs=dict(axis=1, start=1, end=5, step=2)).output,
                g.add_node("slice", [x], attrs=dict(axis=-1, start=-3, end=2**62)).output,
            ]
        else:
            outs = [
                g.add_node("select", [x], attrs=dict(axis=1, index=2)).output,
                g.add_node("select", [x], attrs=dict(axis=-1, index=-1)).output,
            ]
        g.set_outputs(outs)

    return build


def conv_transpose(g):
    x = g.add_input("x", f32(2, 4, 5, 5))
    wt, b = g.add_param("up.weight", rand(4, 3, 3, 3)), g.add_param("up.bias", rand(6))
    attrs = dict(stride=[2, 2], pads=[1, 0, 0, 2], output_padding=[1, 1], dilation=[1, 1], groups=2)
    g.set_outputs([g.add_node("conv_transpose", [x, wt, b], attrs=attrs).output])


def resize(g):
    x = g.add_input("x", f32(2, 3, 4, 5))
    outs = [
        g.add_node("resize", [x], attrs=dict(size=[8, 10], scales=[2.0, 2.0])).output,
        g.add_node("resize", [x], attrs=dict(size=[7, 7], mode="linear", scales=[1.75, 1.5])).output,
        g.add_node("resize", [x], attrs=dict(size=[7, 9], mode="linear", align_corners=True)).output,
        g.add_node("resize", [x], attrs=dict(size=[5, 8], mode="cubic")).output,
        g.add_node("resize", [x], attrs=dict(size=[6, 9], mode="nearest-exact")).output,
    ]
    g.set_outputs(outs)


def compare(op):
    def build(g):
        a, b = g.add_input("a", f32(2, 3, 4)), g.add_input("b", f32(3, 1))
        i = g.add_input("i", TensorType((2, 3, 4), "int64"))
        half = g.add_param("half", np.float32(0.5))
        g.set_outputs([g.add_node(op, [a, b]).output, g.add_node(op, [i, half]).output])

    return build


def where(g):
    a, b = g.add_input("a", f32(2, 3, 4)), g.add_input("b", f32(3, 1))
    cond = g.add_node("greater", [a, b]).output
    i = g.add_input("i", TensorType((2, 3, 4), "int64"))
    g.set_outputs([g.add_node("where", [cond, a, b]).output, g.add_node("where", [cond, i, b]).output])


def einsum(g):
    a, b = g.add_input("a", f32(2, 3, 4)), g.add_input("b", f32(2, 5, 4))
    g.set_outputs([g.add_node("einsum", [a, b], attrs={"equation": "bik,bjk->bij"}).output])


def embedding(g):
    ids = g.add_input("ids", TensorType((2, 5), "int64"))
    table = g.add_param("emb.weight", rand(7, 4))
    g.set_outputs([g.add_node("embedding", [ids, table]).output])


def quantize(g):
    x = g.add_input("x", f32(2, 3, 4))
    s, z = g.add_param("s", np.float32(0.02)), g.add_param("z", np.uint8(128))
    cs, cz = (
        g.add_param("cs", np.array([0.01, 0.02, 0.03], np.float32)),
        g.add_param("cz", np.array([0, 2, -3], np.int8)),
    )
    g.set_outputs(
        [
            g.add_node("quantize", [x, s, z], attrs={"dtype": "uint8"}).output,
            g.add_node("quantize", [x, cs, cz], attrs={"axis": 1}).output,
        ]
    )


def dequantize(g):
    x = g.add_input("x", f32(2, 4))
    q = g.add_param("q", RNG.integers(-100, 100, (3, 4)).astype(np.int8))
    s = g.add_param("s", np.linspace(0.01, 0.03, 3).astype(np.float32))
    z = g.add_param("z", np.array([0, 1, -1], np.int8))
    wt = g.add_node("dequantize", [q, s, z], attrs={"axis": 0}).output
    g.set_outputs([g.add_node("linear", [x, wt]).output])


CASES = {
    "conv": conv,
    "conv_transpose": conv_transpose,
    "linear": linear,
    "matmul": matmul,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    **{
        op: unary(op)
        for op in (
            "relu",
            "sigmoid",
            "tanh",
            "silu",
            "hardswish",
            "hardsigmoid",
            "neg",
            "exp",
            "erf",
            "abs",
            "reciprocal",
            "identity",
        )
    },
    **{op: unary(op, positive=True) for op in ("log", "sqrt", "rsqrt")},
    "gelu": gelu,
    "clip": clip,
    **{op: binary(op) for op in ("add", "sub", "mul", "div", "maximum", "minimum")},
    "pow": binary("pow", positive=True, b_shape=()),
    "max_pool": single(
        "max_pool",
        (2, 3, 9, 9),
        dict(kernel_size=[3, 3], stride=[2, 2], pads=[1, 1, 1, 1], dilation=[1, 2], ceil_mode=True),
    ),
    "avg_pool": single(
        "avg_pool", (2, 3, 9, 9), dict(kernel_size=[3, 2], stride=[2, 2], pads=[1, 1, 1, 1], count_include_pad=False)
    ),
    "adaptive_avg_pool": adaptive("adaptive_avg_pool"),
    "adaptive_max_pool": adaptive("adaptive_max_pool"),
    "mean": single("mean", (2, 3, 4), {"dims": [1, -1], "keepdim": True}),
    "sum": single("sum", (2, 3, 4), {"dims": [0]}),
    "softmax": single("softmax", (2, 3, 4), {"axis": 1}),
    "concat": concat,
    "split": split,
    "reshape": single("reshape", (2, 3, 4), {"shape": [0, -1, 2]}),
    "flatten": flatten,
    "squeeze": axes_op("squeeze", (2, 1, 3, 1), [1, -1], [3], []),
    "unsqueeze": axes_op("unsqueeze", (2, 3), [0, -1], [3, 1]),
    "permute": single("permute", (2, 3, 4), {"perm": [2, 0, 1]}),
    "expand": single("expand", (3, 1), {"shape": [2, -1, 4]}),
    "slice": slice_select("slice"),
    "select": slice_select("select"),
    "embedding": embedding,
    "resize": resize,
    "pixel_shuffle": single("pixel_shuffle", (2, 8, 3, 4), {"upscale_factor": 2}),
    "pixel_unshuffle": single("pixel_unshuffle", (2, 2, 6, 4), {"downscale_factor": 2}),
    **{op: compare(op) for op in ("equal", "less", "greater", "less_equal", "greater_equal")},
    "where": where,
    "einsum": einsum,
    "cast": single("cast", (2, 3), {"dtype": "int32"}),
    "dropout": single("dropout", (2, 3), {"p": 0.1}),
    "quantize": quantize,
    "dequantize": dequantize,
}


def build(name):
    g = Graph(name)
    CASES[name](g)
    g.verify()
    return g


def test_every_canonical_op_has_a_rule_and_a_case():
    assert set(OPS) == set(RULES)
    assert set(OPS) == set(CASES)


@pytest.mark.parametrize("opset", [13, 17, 20, 23])
@pytest.mark.parametrize("op", sorted(CASES))
def test_op_emits_and_runs(op, opset, interpret):
    graph = build(op)
    model = emit_onnx(graph, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    assert set(graph.params) <= {t.name for t in model.graph.initializer}
    feeds = feeds_for(graph)
    got = run_onnx(model, feeds)
    assert_close(got, interpret(graph, feeds))
    if HAS_TORCH_EMITTER and opset == DEFAULT_OPSET:
        assert_close(graph.run(feeds), got)


def test_opset_specific_forms():
    def op_types(graph, opset):
        return {n.op_type for n in emit_onnx(graph, opset=opset).graph.node}

    assert "Gelu" in op_types(build("gelu"), 20) and "Erf" in op_types(build("gelu"), 17)
    assert "LayerNormalization" in op_types(build("layer_norm"), 17)
    assert "LayerNormalization" not in op_types(build("layer_norm"), 13)
    assert "HardSwish" not in op_types(build("hardswish"), 13)
    assert op_types(build("linear"), 17) == {"Gemm", "Transpose", "MatMul", "Add"}
    assert op_types(build("adaptive_avg_pool"), 17) == {"GlobalAveragePool", "AveragePool"}
    assert emit_onnx(build("relu")).opset_import[0].version == DEFAULT_OPSET == 17


def test_value_types_and_names():
    g = Graph("typed")
    x = g.add_input("x", TensorType(("batch", 8), "float32"))
    wt = g.add_param("fc.weight", rand(4, 8))
    h = g.add_node("linear", [x, wt], name="fc", output_types=[TensorType(("batch", 4))]).output
    g.set_outputs([g.add_node("relu", [h], name="act").output])
    assert g.values["act"].type == TensorType(("batch", 4), "float32")  # shape inference carries the symbol
    model = emit_onnx(g)
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(model.graph.input[0]) == ["batch", 8]
    assert dims(model.graph.output[0]) == ["batch", 4]
    assert {vi.name: dims(vi) for vi in model.graph.value_info} == {"fc": ["batch", 4]}
    assert [(n.name, n.op_type) for n in model.graph.node] == [("fc", "Gemm"), ("act", "Relu")]
    for n in (1, 5):
        feeds = feeds_for(g, {"batch": n})
        with np.errstate(all="ignore"):
            want = np.maximum(feeds[0] @ g.params["fc.weight"].data.T, 0)
        assert_close(run_onnx(model, feeds), [want])


def test_masked_parameter_is_emitted_pruned():
    g = Graph("masked")
    x = g.add_input("x", f32(2, 4))
    wt = g.add_param("w", rand(3, 4))
    dense = g.params[wt].data
    g.set_mask(wt, np.arange(12).reshape(3, 4) % 2 == 0)
    g.set_outputs([g.add_node("linear", [x, wt]).output])
    init = {t.name: onnx.numpy_helper.to_array(t) for t in emit_onnx(g).graph.initializer}
    np.testing.assert_array_equal(init["w"], np.where(g.params[wt].mask, dense, 0))


def test_int_division_casts_to_the_result_type(interpret):
    g = Graph("div")
    a, b = g.add_input("a", TensorType((3,), "int64")), g.add_input("b", TensorType((3,), "int64"))
    y = g.add_node("div", [a, b]).output
    assert g.type_of(y).dtype == "float32"
    g.set_outputs([y])
    feeds = [np.array([7, -7, 9]), np.array([2, 2, 4])]
    assert_close(run_onnx(emit_onnx(g), feeds), interpret(g, feeds))


# --- opaque nodes and errors ---------------------------------------------------------------------------


def _torch_opaque_graph():
    g = Graph("shuffle")
    x = g.add_input("x", f32(1, 4, 2, 2))
    n = g.add_node(
        "opaque",
        [x],
        name="shuffle",
        output_types=[f32(1, 1, 4, 4)],
        attrs={"framework": "torch", "target": "aten.pixel_shuffle.default", "args": (ValueRef(0), 2), "kwargs": {}},
    )
    g.set_outputs([n.output])
    return g


def test_opaque_torch_node_is_refused():
    with pytest.raises(EmitError, match=r"node 'shuffle'.*aten.pixel_shuffle.default.*cannot be emitted to ONNX"):
        emit_onnx(_torch_opaque_graph())


def test_opaque_onnx_node_built_by_hand(interpret):
    g = Graph("topk")
    x = g.add_input("x", f32(2, 5))
    k = g.add_param("k", np.array([2]))
    top = g.add_node(
        "opaque",
        [x, k],
        name="top",
        outputs=["v", "i"],
        output_types=[f32(2, 2), TensorType((2, 2), "int64")],
        attrs={
            "framework": "onnx",
            "op_type": "TopK",
            "domain": "",
            "onnx_attrs": {"axis": np.int64(1), "largest": 1, "sorted": True},
        },
    )
    g.set_outputs([g.add_node("relu", ["v"]).output, top.outputs[1]])
    model = emit_onnx(g)
    (topk,) = [n for n in model.graph.node if n.op_type == "TopK"]
    assert {a.name: helper.get_attribute_value(a) for a in topk.attribute} == {"axis": 1, "largest": 1, "sorted": 1}
    x_val = RNG.standard_normal((2, 5)).astype(np.float32)
    v, i = run_onnx(model, [x_val])
    np.testing.assert_array_equal(i, np.argsort(-x_val, axis=1)[:, :2])
    if HAS_TORCH_EMITTER:
        assert_close(g.run([x_val]), [v, i])  # graph.run goes through onnxruntime here


def test_opaque_op_from_another_opset():
    g = Graph("pad")
    x = g.add_input("x", f32(1, 2))
    pads = g.add_param("pads", np.array([0, 1, 0, 1]))
    n = g.add_node(
        "opaque",
        [x, pads],
        name="pad",
        output_types=[f32(1, 4)],
        attrs={"framework": "onnx", "op_type": "Pad", "domain": "", "onnx_attrs": {}},
    )
    g.set_outputs([n.output])
    g.metadata.update(source="onnx", opset=17)
    assert emit_onnx(g).opset_import[0].version == 17  # the source opset is kept by default
    with pytest.raises(EmitError, match=r"node 'pad'.*Pad comes from opset 17.*changed by opset 20"):
        emit_onnx(g, opset=20)


def test_bad_opset_and_untyped_output():
    with pytest.raises(EmitError, match="opset 9 is outside"):
        emit_onnx(build("relu"), opset=9)
    g = Graph("untyped")
    x = g.add_input("x", f32(2))
    n = g.add_node(
        "opaque",
        [x],
        name="mystery",
        attrs={"framework": "onnx", "op_type": "Mystery", "domain": "x.y", "onnx_attrs": {}},
    )
    g.set_outputs([n.output])
    with pytest.raises(EmitError, match="output '%mystery' has no type"):
        emit_onnx(g)


def test_large_models_are_refused(monkeypatch):
    monkeypatch.setattr(emit_mod, "_PROTO_LIMIT", 1 << 20)
    g = Graph("big")
    x = g.add_input("x", f32(1, 1024))
    g.set_outputs([g.add_node("linear", [x, g.add_param("w", np.zeros((1024, 1024), np.float32))]).output])
    with pytest.raises(EmitError, match="2 GB"):
        emit_onnx(g)


# --- saving ----------------------------------------------------------------------------------------------


def test_save_onnx_writes_a_loadable_model(tmp_path):
    graph = build("conv")
    path = graph.save_onnx(tmp_path / "sub" / "conv.onnx")
    assert path == tmp_path / "sub" / "conv.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == emit_onnx(graph).SerializeToString()
    assert sorted(p.name for p in path.parent.iterdir()) == ["conv.onnx"]


def test_save_onnx_failure_leaves_old_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old contents")
    with pytest.raises(EmitError):
        save_onnx(_torch_opaque_graph(), path)
    assert path.read_bytes() == b"old contents"
    fresh = tmp_path / "never.onnx"
    with pytest.raises(EmitError):
        save_onnx(_torch_opaque_graph(), fresh)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_save_onnx_write_failure_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old contents")

    class Boom(Exception):
        pass

    def fail_replace(src, dst):
        raise Boom()

    monkeypatch.setattr("graphopt.fileio.os.replace", fail_replace)
    with pytest.raises(Boom):
        save_onnx(build("relu"), path)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
