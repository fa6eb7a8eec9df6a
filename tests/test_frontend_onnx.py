"""ONNX frontend: per-op round trips (ONNX -> Graph -> ONNX, onnxruntime both sides, and the
canonical references against onnxruntime), opaque ops, symbolic dims, golden IR, input
safety, bad files, torch exports and the bundled models."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from graphopt.backends.onnxruntime import run_onnx
from graphopt.errors import FrontendError
from graphopt.frontends.onnx import load_onnx

F32, I64 = T.FLOAT, T.INT64
try:  # written alongside; the checks through graph.run skip until it imports
    import graphopt.emit.torch  # noqa: F401

    HAS_TORCH_EMITTER = True
except Exception:
    HAS_TORCH_EMITTER = False
RNG = np.random.default_rng(0)


# --- helpers -------------------------------------------------------------------------------


def make(nodes, inputs, outputs, inits=None, opset=17, domains=()):
    """A model from nodes; inputs {name: (elem, shape)}; outputs names (typed by inference)."""
    ins = [helper.make_tensor_value_info(n, e, s) for n, (e, s) in inputs.items()]
    outs = [o if isinstance(o, onnx.ValueInfoProto) else helper.make_empty_tensor_value_info(o) for o in outputs]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()]
    g = helper.make_graph(nodes, "m", ins, outs, inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains]
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = 8
    return model


def feeds_for(model, dims=None):
    dims = dims or {}
    feeds = {}
    for vi in model.graph.input:
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 2) for d in tt.shape.dim]
        if tt.elem_type == F32:
            feeds[vi.name] = RNG.standard_normal(shape).astype(np.float32)
        elif tt.elem_type == T.BOOL:
            feeds[vi.name] = np.array(True)
        else:
            feeds[vi.name] = RNG.integers(0, 5, shape).astype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return feeds


def assert_close(got, want, tol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def roundtrip(model, expect=(), *, opaque_ok=False, feeds=None, interpret=None):
    """load -> verify -> emit; onnxruntime on both sides, and the op references vs onnxruntime."""
    before = model.SerializeToString()
    graph = load_onnx(model)
    assert model.SerializeToString() == before, "load_onnx modified its input"
    ops = graph.op_counts()
    assert set(expect) <= set(ops), ops
    if not opaque_ok:
        assert not any(k.startswith("opaque") for k in ops), [
            (n.name, n.attrs.get("op_type"), n.meta.get("unmapped")) for n in graph.nodes if n.is_opaque
        ]
    out = graph.to_onnx()  # checked with full_check=True by the emitter
    feeds = feeds or feeds_for(model)
    want = run_onnx(model, feeds)
    got = run_onnx(out, feeds)
    assert_close(got, want)
    if interpret is not None and not opaque_ok:  # canonical semantics == ONNX semantics
        assert_close(interpret(graph, [feeds[i] for i in graph.inputs]), want)
    return graph


def w(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def node(op, ins, outs=("y",), **attrs):
    return helper.make_node(op, list(ins), list(outs), **attrs)


X4 = {"x": (F32, [2, 4, 8, 8])}
X3 = {"x": (F32, [2, 3, 6])}


# --- per-op cases: (id, model, canonical ops expected) ------------------------------------------


def _cases():
    c = []
    add = c.append
    # Conv: bias, groups, dilation, strides, asymmetric pads, auto_pad, 1-D
    add(
        (
            "conv",
            make([node("Conv", ["x", "W", "b"], pads=[1, 1, 1, 1])], X4, ["y"], {"W": w(6, 4, 3, 3), "b": w(6)}),
            {"conv"},
        )
    )
    add(
        (
            "conv_group_dil",
            make(
                [node("Conv", ["x", "W"], group=2, dilations=[2, 1], strides=[2, 1], pads=[1, 0, 2, 1])],
                X4,
                ["y"],
                {"W": w(6, 2, 3, 3)},
            ),
            {"conv"},
        )
    )
    for mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        add(
            (
                f"conv_{mode.lower()}",
                make([node("Conv", ["x", "W"], auto_pad=mode, strides=[2, 2])], X4, ["y"], {"W": w(3, 4, 4, 4)}),
                {"conv"},
            )
        )
    add(
        (
            "conv1d",
            make([node("Conv", ["x", "W", "b"], pads=[2, 0])], X3, ["y"], {"W": w(5, 3, 3), "b": w(5)}),
            {"conv"},
        )
    )
    # Gemm
    G = {"a": (F32, [3, 4])}
    add(
        (
            "gemm_transB",
            make([node("Gemm", ["a", "B", "C"], transB=1)], G, ["y"], {"B": w(5, 4), "C": w(5)}),
            {"linear"},
        )
    )
    add(("gemm_plain", make([node("Gemm", ["a", "B", "C"])], G, ["y"], {"B": w(4, 5), "C": w(1, 5)}), {"linear"}))
    add(
        (
            "gemm_scalar_bias",
            make([node("Gemm", ["a", "B", "C"], transB=1)], G, ["y"], {"B": w(5, 4), "C": np.array(0.5, np.float32)}),
            {"linear"},
        )
    )
    add(
        (
            "gemm_general",
            make(
                [node("Gemm", ["a", "B", "C"], transA=1, alpha=0.5, beta=2.0)],
                {"a": (F32, [4, 3])},
                ["y"],
                {"B": w(4, 5), "C": w(3, 5)},
            ),
            {"permute", "matmul", "mul", "add"},
        )
    )
    add(
        (
            "gemm_var_B",
            make([node("Gemm", ["a", "b"], transB=1)], {"a": (F32, [3, 4]), "b": (F32, [5, 4])}, ["y"]),
            {"linear"},
        )
    )
    add(
        (
            "gemm_var_B_plain",
            make([node("Gemm", ["a", "b"])], {"a": (F32, [3, 4]), "b": (F32, [4, 5])}, ["y"]),
            {"matmul"},
        )
    )
    # MatMul
    add(("matmul_const", make([node("MatMul", ["x", "B"])], X3, ["y"], {"B": w(6, 7)}), {"linear"}))
    add(
        (
            "matmul_bias",
            make(
                [node("MatMul", ["x", "B"], ["m"]), node("Add", ["bias", "m"])], X3, ["y"], {"B": w(6, 7), "bias": w(7)}
            ),
            {"linear"},
        )
    )
    add(
        (
            "matmul_transposed_weight",
            make(
                [node("Transpose", ["W"], ["wt"], perm=[1, 0]), node("MatMul", ["x", "wt"])], X3, ["y"], {"W": w(7, 6)}
            ),
            {"linear"},
        )
    )
    add(
        (
            "matmul_batched",
            make([node("MatMul", ["a", "b"])], {"a": (F32, [2, 3, 4]), "b": (F32, [2, 4, 5])}, ["y"]),
            {"matmul"},
        )
    )
    # normalization
    add(
        (
            "batch_norm",
            make(
                [node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
                X4,
                ["y"],
                {"s": w(4), "b": w(4), "m": w(4), "v": w(4, positive=True)},
            ),
            {"batch_norm"},
        )
    )
    add(
        (
            "layer_norm",
            make([node("LayerNormalization", ["x", "s", "b"])], X3, ["y"], {"s": w(6), "b": w(6)}),
            {"layer_norm"},
        )
    )
    add(
        (
            "layer_norm_axis",
            make([node("LayerNormalization", ["x", "s"], axis=-2, epsilon=1e-3)], X3, ["y"], {"s": w(3, 6)}),
            {"layer_norm"},
        )
    )
    # activations
    for op, canon in [
        ("Relu", "relu"),
        ("Sigmoid", "sigmoid"),
        ("Tanh", "tanh"),
        ("HardSwish", "hardswish"),
        ("Erf", "erf"),
        ("Neg", "neg"),
        ("Abs", "abs"),
    ]:
        add((op.lower(), make([node(op, ["x"])], X3, ["y"]), {canon}))
    add(("hardsigmoid_torch", make([node("HardSigmoid", ["x"], alpha=1 / 6)], X3, ["y"]), {"hardsigmoid"}))
    add(("hardsigmoid_onnx", make([node("HardSigmoid", ["x"])], X3, ["y"]), {"mul", "add", "clip"}))
    add(("gelu", make([node("Gelu", ["x"])], X3, ["y"], opset=20), {"gelu"}))
    add(("gelu_tanh", make([node("Gelu", ["x"], approximate="tanh")], X3, ["y"], opset=20), {"gelu"}))
    erf_gelu = [
        node("Div", ["x", "sqrt2"], ["d"]),
        node("Erf", ["d"], ["e"]),
        node("Add", ["e", "one"], ["a"]),
        node("Mul", ["x", "a"], ["m"]),
        node("Mul", ["m", "half"]),
    ]
    add(
        (
            "gelu_erf_form",
            make(erf_gelu, X3, ["y"], {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}),
            {"gelu"},
        )
    )
    add(
        (
            "clip",
            make([node("Clip", ["x", "lo", "hi"])], X3, ["y"], {"lo": np.float32(-0.5), "hi": np.float32(1)}),
            {"clip"},
        )
    )
    add(("clip_max_only", make([node("Clip", ["x", "", "hi"])], X3, ["y"], {"hi": np.float32(0.3)}), {"clip"}))
    add(("clip_attrs_opset10", make([node("Clip", ["x"], min=0.0, max=6.0)], X3, ["y"], opset=10), {"clip"}))
    # binary
    for op, canon in [
        ("Add", "add"),
        ("Sub", "sub"),
        ("Mul", "mul"),
        ("Div", "div"),
        ("Max", "maximum"),
        ("Min", "minimum"),
    ]:
        add((op.lower(), make([node(op, ["x", "c"])], X3, ["y"], {"c": w(6)}), {canon}))
    add(("pow", make([node("Pow", ["p", "e"])], {"p": (F32, [2, 3])}, ["y"], {"e": np.float32(2.0)}), {"pow"}))
    add(("add_int", make([node("Add", ["i", "j"])], {"i": (I64, [2, 3]), "j": (I64, [3])}, ["y"]), {"add"}))
    # shape ops
    add(("concat", make([node("Concat", ["x", "c", "x"], axis=1)], X3, ["y"], {"c": w(2, 1, 6)}), {"concat"}))
    add(
        (
            "split_input",
            make([node("Split", ["x", "s"], ["y0", "y1"], axis=2)], X3, ["y0", "y1"], {"s": np.array([2, 4])}),
            {"split"},
        )
    )
    add(
        (
            "split_attr_opset11",
            make([node("Split", ["x"], ["y0", "y1"], axis=2, split=[1, 5])], X3, ["y0", "y1"], opset=11),
            {"split"},
        )
    )
    add(("split_equal", make([node("Split", ["x"], ["y0", "y1", "y2"], axis=2)], X3, ["y0", "y1", "y2"]), {"split"}))
    add(
        (
            "split_num_outputs",
            make(
                [node("Split", ["z"], ["y0", "y1", "y2"], axis=1, num_outputs=3)],
                {"z": (F32, [2, 8])},
                ["y0", "y1", "y2"],
                opset=18,
            ),
            {"split"},
        )
    )
    add(("reshape", make([node("Reshape", ["x", "s"])], X3, ["y"], {"s": np.array([0, -1, 2])}), {"reshape"}))
    for axis in (0, 1, 2, 3, -1):
        add((f"flatten_axis{axis}", make([node("Flatten", ["x"], axis=axis)], {"x": (F32, [2, 3, 4])}, ["y"]), set()))
    add(("transpose", make([node("Transpose", ["x"], perm=[2, 0, 1])], X3, ["y"]), {"permute"}))
    add(("transpose_default", make([node("Transpose", ["x"])], X3, ["y"]), {"permute"}))
    add(("unsqueeze", make([node("Unsqueeze", ["x", "ax"])], X3, ["y"], {"ax": np.array([0, -1])}), {"unsqueeze"}))
    add(("unsqueeze_opset11", make([node("Unsqueeze", ["x"], axes=[1])], X3, ["y"], opset=11), {"unsqueeze"}))
    add(
        (
            "squeeze",
            make([node("Squeeze", ["z", "ax"])], {"z": (F32, [2, 1, 3, 1])}, ["y"], {"ax": np.array([1])}),
            {"squeeze"},
        )
    )
    add(("squeeze_all", make([node("Squeeze", ["z"])], {"z": (F32, [2, 1, 3, 1])}, ["y"]), {"squeeze"}))
    add(
        (
            "expand",
            make([node("Expand", ["z", "s"])], {"z": (F32, [3, 1])}, ["y"], {"s": np.array([2, 3, 4])}),
            {"expand"},
        )
    )
    add(
        (
            "expand_broadcast_one",
            make([node("Expand", ["z", "s"])], {"z": (F32, [3, 4])}, ["y"], {"s": np.array([2, 1, 1])}),
            {"expand"},
        )
    )
    add(
        (
            "slice",
            make(
                [node("Slice", ["x", "st", "en", "ax"])],
                X3,
                ["y"],
                {"st": np.array([1]), "en": np.array([5]), "ax": np.array([2])},
            ),
            {"slice"},
        )
    )
    add(
        (
            "slice_multi",
            make(
                [node("Slice", ["x", "st", "en", "ax", "sp"])],
                X3,
                ["y"],
                {"st": np.array([-2, 0]), "en": np.array([2**62, -1]), "ax": np.array([1, 2]), "sp": np.array([1, 2])},
            ),
            {"slice"},
        )
    )
    add(
        (
            "slice_attrs_opset9",
            make([node("Slice", ["x"], starts=[1], ends=[3], axes=[1])], X3, ["y"], opset=9),
            {"slice"},
        )
    )
    # pooling and reductions
    add(
        (
            "max_pool",
            make(
                [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], X4, ["y"]
            ),
            {"max_pool"},
        )
    )
    add(
        (
            "max_pool_dilated",
            make([node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])], X4, ["y"]),
            {"max_pool"},
        )
    )
    add(
        (
            "max_pool_same",
            make([node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")], X4, ["y"]),
            {"max_pool"},
        )
    )
    add(
        (
            "avg_pool",
            make([node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], X4, ["y"]),
            {"avg_pool"},
        )
    )
    add(
        (
            "avg_pool_include_pad",
            make([node("AveragePool", ["x"], kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)], X4, ["y"]),
            {"avg_pool"},
        )
    )
    add(("global_avg_pool", make([node("GlobalAveragePool", ["x"])], X4, ["y"]), {"adaptive_avg_pool"}))
    add(("global_max_pool", make([node("GlobalMaxPool", ["x"])], X4, ["y"]), {"adaptive_max_pool"}))
    add(("reduce_mean_attr", make([node("ReduceMean", ["x"], axes=[1, -1])], X3, ["y"]), {"mean"}))
    add(
        (
            "reduce_mean_input",
            make([node("ReduceMean", ["x", "ax"], keepdims=0)], X3, ["y"], {"ax": np.array([2])}, opset=18),
            {"mean"},
        )
    )
    add(("reduce_mean_all", make([node("ReduceMean", ["x"], keepdims=0)], X3, ["y"]), {"mean"}))
    add(
        ("reduce_sum", make([node("ReduceSum", ["x", "ax"], keepdims=0)], X3, ["y"], {"ax": np.array([0, 2])}), {"sum"})
    )
    add(("softmax", make([node("Softmax", ["x"], axis=1)], X3, ["y"]), {"softmax"}))
    add(("softmax_opset11", make([node("Softmax", ["x"], axis=2)], X3, ["y"], opset=11), {"softmax"}))
    # gather
    add(
        (
            "gather_embedding",
            make([node("Gather", ["E", "ids"])], {"ids": (I64, [2, 5])}, ["y"], {"E": w(7, 4)}),
            {"embedding"},
        )
    )
    add(("gather_select", make([node("Gather", ["x", "i"], axis=1)], X3, ["y"], {"i": np.array(1)}), {"select"}))
    add(("gather_select_last", make([node("Gather", ["x", "i"], axis=2)], X3, ["y"], {"i": np.array(-1)}), {"select"}))
    add(("gather_one", make([node("Gather", ["x", "i"], axis=2)], X3, ["y"], {"i": np.array([-1])}), {"slice"}))
    # misc
    add(("dropout", make([node("Dropout", ["x", "r"])], X3, ["y"], {"r": np.float32(0.3)}), {"dropout"}))
    add(("dropout_opset10", make([node("Dropout", ["x"], ratio=0.2)], X3, ["y"], opset=10), {"dropout"}))
    add(("identity", make([node("Identity", ["x"])], X3, ["y"]), {"identity"}))
    add(("cast", make([node("Cast", ["x"], to=T.INT32)], X3, ["y"]), {"cast"}))
    add(
        (
            "constant",
            make(
                [node("Constant", [], ["k"], value=numpy_helper.from_array(w(6), "k")), node("Add", ["x", "k"])],
                X3,
                ["y"],
            ),
            {"add"},
        )
    )
    add(
        (
            "constant_floats",
            make(
                [node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), node("Mul", ["x", "k"])],
                X3,
                ["y"],
            ),
            {"mul"},
        )
    )
    # quantization
    add(
        (
            "qdq_per_tensor",
            make(
                [node("QuantizeLinear", ["x", "s"], ["q"]), node("DequantizeLinear", ["q", "s"])],
                X3,
                ["y"],
                {"s": np.float32(0.02)},
            ),
            {"quantize", "dequantize"},
        )
    )
    qw = RNG.integers(-127, 127, (5, 6)).astype(np.int8)
    add(
        (
            "qdq_per_channel",
            make(
                [
                    node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
                    node("DequantizeLinear", ["q", "s", "z"], ["dx"], axis=1),
                    node("DequantizeLinear", ["W", "ws", "wz"], ["dw"], axis=0),
                    node("MatMul", ["dx", "dwt"]),
                    node("Transpose", ["dw"], ["dwt"]),
                ],
                X3,
                ["y"],
                {
                    "s": np.full(3, 0.05, np.float32),
                    "z": np.array([0, 3, -2], np.int8),
                    "W": qw,
                    "ws": np.linspace(0.01, 0.02, 5).astype(np.float32),
                    "wz": np.zeros(5, np.int8),
                },
            ),
            {"quantize", "dequantize", "matmul"},
        )
    )
    return c


CASES = _cases()


@pytest.mark.parametrize("model,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_roundtrip(model, expect, interpret):
    roundtrip(model, expect, interpret=interpret)


def test_symbolic_dims_survive():
    model = make(
        [
            node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            node("Relu", ["c"], ["r"]),
            node("GlobalAveragePool", ["r"], ["p"]),
            node("Flatten", ["p"], ["f"]),
            node("Gemm", ["f", "B", "C"], transB=1),
            node("Unsqueeze", ["y", "ax"], ["u"]),
        ],
        {"x": (F32, ["N", 4, "H", "W"])},
        ["y", "u"],
        {"W": w(6, 4, 3, 3), "B": w(5, 6), "C": w(5), "ax": np.array([1])},
    )
    graph = load_onnx(model)
    assert graph.type_of("x").shape == ("N", 4, "H", "W")
    assert graph.type_of("c").shape == ("N", 6, "H", "W")
    assert graph.type_of("y").shape == ("N", 5)
    assert graph.type_of("u").shape == ("N", 1, 5)
    assert graph.producer("u").op == "unsqueeze" and graph.producer("u").attrs["axes"] == [1]
    out = graph.to_onnx()
    dims = out.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 4, "H", "W"]
    for n, h in ((1, 8), (3, 5)):
        feeds = feeds_for(model, {"N": n, "H": h, "W": h})
        assert_close(run_onnx(out, feeds), run_onnx(model, feeds))


def test_parameters_and_metadata():
    model = make(
        [
            node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
            node("Reshape", ["n", "shape"], ["r"]),
            node("Gemm", ["r", "B"], transB=1),
        ],
        {"x": (F32, [2, 4, 1, 1])},
        ["y"],
        {"s": w(4), "b": w(4), "m": w(4), "v": w(4, positive=True), "shape": np.array([2, 4]), "B": w(3, 4)},
    )
    model.producer_name, model.producer_version = "handmade", "1.0"
    graph = load_onnx(model, name="bn")
    assert graph.name == "bn"
    assert graph.metadata["source"] == "onnx" and graph.metadata["opset"] == 17
    assert graph.metadata["producer"] == "handmade 1.0"
    trainable = {k for k, p in graph.params.items() if p.trainable}
    assert trainable == {"s", "b", "B"}  # running stats and int shapes are frozen
    graph.verify()


# --- opaque ops ----------------------------------------------------------------------------------


def test_topk_is_opaque_and_roundtrips():
    model = make(
        [node("TopK", ["x", "k"], ["v", "i"], axis=-1), node("Relu", ["v"], ["y"])],
        X3,
        ["y", "i"],
        {"k": np.array([2])},
    )
    graph = roundtrip(model, {"relu"}, opaque_ok=True)
    (top,) = [n for n in graph.nodes if n.is_opaque]
    assert top.attrs["op_type"] == "TopK" and top.attrs["framework"] == "onnx"
    assert top.attrs["onnx_attrs"] == {"axis": -1}
    assert str(graph.type_of("i")) == "i64[2,3,2]"
    emitted = [n for n in graph.to_onnx().graph.node if n.op_type == "TopK"][0]
    original = model.graph.node[0]
    assert (list(emitted.input), list(emitted.output), list(emitted.attribute)) == (
        list(original.input),
        list(original.output),
        list(original.attribute),
    )


def test_int_div_and_missing_inputs_stay_opaque():
    model = make(
        [
            node("Div", ["i", "j"], ["d"]),
            node("Cast", ["d"], ["f"], to=F32),
            node("Resize", ["f", "", "sc"], ["y"], mode="nearest"),
        ],
        {"i": (I64, [1, 1, 2, 2]), "j": (I64, [1])},
        ["y"],
        {"sc": np.array([1, 1, 2, 2], np.float32)},
    )
    feeds = {"i": np.arange(4).reshape(1, 1, 2, 2) * 7, "j": np.array([3])}
    graph = roundtrip(model, {"cast"}, opaque_ok=True, feeds=feeds)
    resize = [n for n in graph.nodes if n.attrs.get("op_type") == "Resize"][0]
    assert resize.attrs["onnx_missing_inputs"] == [1] and resize.inputs == ("f", "sc")
    assert {n.attrs.get("op_type") for n in graph.nodes if n.is_opaque} == {"Div", "Resize"}


@pytest.mark.parametrize(
    "op,axes,reason",
    [
        ("Unsqueeze", [3], "out of range"),  # result rank 3: 3 must not wrap to 0
        ("Unsqueeze", [0, -4], "twice"),  # result rank 4: -4 is 0
        ("Squeeze", [1, -1], "twice"),
    ],
)
def test_invalid_squeeze_axes_stay_opaque(op, axes, reason):
    graph = load_onnx(make([node(op, ["z", "ax"])], {"z": (F32, [2, 1])}, ["y"], {"ax": np.array(axes)}))
    (n,) = graph.nodes
    assert n.is_opaque and n.attrs["op_type"] == op and reason in n.meta["unmapped"]


def test_contrib_domain_op_gets_types_from_onnxruntime():
    model = make(
        [
            node("Relu", ["x"], ["r"]),
            helper.make_node("Gelu", ["r"], ["g"], domain="com.microsoft"),
            node("Neg", ["g"]),
        ],
        X3,
        ["y"],
        domains=[("com.microsoft", 1)],
    )
    graph = roundtrip(model, {"relu", "neg"}, opaque_ok=True)
    gelu = graph.producer("g")
    assert gelu.is_opaque and gelu.attrs["domain"] == "com.microsoft"
    assert str(graph.type_of("g")) == "f32[2,3,6]"


def test_custom_domain_op_survives():
    tensor = numpy_helper.from_array(np.arange(3, dtype=np.float32))
    custom = helper.make_node(
        "Frobnicate", ["x"], ["f"], domain="my.ops", level=3, gain=0.5, mode="fast", sizes=[1, 2], table=tensor
    )
    out_vi = helper.make_tensor_value_info("f", F32, [2, 3, 6])
    model = make([custom], X3, [out_vi], domains=[("my.ops", 2)])
    before = model.SerializeToString()
    graph = load_onnx(model)
    assert model.SerializeToString() == before
    (n,) = graph.nodes
    assert n.attrs["op_type"] == "Frobnicate" and n.attrs["domain"] == "my.ops"
    assert n.attrs["onnx_attrs"]["mode"] == "fast" and n.attrs["onnx_attrs"]["sizes"] == [1, 2]
    np.testing.assert_array_equal(n.attrs["onnx_attrs"]["table"], np.arange(3))
    out = graph.to_onnx()
    assert {(o.domain, o.version) for o in out.opset_import} >= {("my.ops", 2)}
    emitted = out.graph.node[0]
    assert (emitted.op_type, emitted.domain) == ("Frobnicate", "my.ops")
    assert sorted(emitted.attribute, key=lambda a: a.name) == sorted(custom.attribute, key=lambda a: a.name)
    assert load_onnx(out).nodes[0].attrs["onnx_attrs"].keys() == n.attrs["onnx_attrs"].keys()


def test_if_with_captured_values_roundtrips():
    then_g = helper.make_graph(
        [node("Add", ["r", "x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F32, [2, 3, 6])]
    )
    else_g = helper.make_graph(
        [node("Mul", ["r", "x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", F32, [2, 3, 6])]
    )
    model = make(
        [node("Relu", ["x"], ["r"]), node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        {**X3, "c": (T.BOOL, [])},
        ["y"],
    )
    graph = roundtrip(model, {"relu"}, opaque_ok=True)
    cond = [n for n in graph.nodes if n.is_opaque][0]
    assert cond.attrs["onnx_captures"] == ["r", "x"] and cond.inputs == ("c", "r", "x")
    assert graph.copy().to_onnx() is not None


# --- golden IR ------------------------------------------------------------------------------------

GOLDEN = """\
graph tiny(%x: f32[1,3,8,8]) -> (%y)
  @conv.weight: f32[4,3,3,3]
  @conv.bias: f32[4]
  @fc.weight: f32[2,4]
  @fc.bias: f32[2]
  %c: f32[1,4,8,8] = conv(%x, @conv.weight, @conv.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %r: f32[1,4,8,8] = relu(%c)
  %p: f32[1,4,1,1] = adaptive_avg_pool(%r) {output_size=[1,1]}
  %f: f32[1,4] = flatten(%p) {end_dim=-1, start_dim=1}
  %y: f32[1,2] = linear(%f, @fc.weight, @fc.bias)
  return %y"""


def test_golden_ir(interpret):
    model = make(
        [
            node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="c", pads=[1, 1, 1, 1]),
            node("Relu", ["c"], ["r"], name="r"),
            node("GlobalAveragePool", ["r"], ["p"], name="p"),
            node("Flatten", ["p"], ["f"], name="f"),
            node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="y", transB=1),
        ],
        {"x": (F32, [1, 3, 8, 8])},
        ["y"],
        {"conv.weight": w(4, 3, 3, 3), "conv.bias": w(4), "fc.weight": w(2, 4), "fc.bias": w(2)},
    )
    graph = roundtrip(model, interpret=interpret)
    graph.name = "tiny"
    assert str(graph) == GOLDEN


# --- inputs are never modified ----------------------------------------------------------------------


def test_file_and_proto_untouched(tmp_path):
    model = make(
        [
            node("Constant", [], ["k"], value=numpy_helper.from_array(w(7), "k")),
            node("MatMul", ["x", "B"], ["m"]),
            node("Add", ["m", "k"], ["a"]),
            node("Shape", ["a"], ["s"]),
            node("Reshape", ["a", "s"]),
        ],
        X3,
        ["y"],
        {"B": w(6, 7)},
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = path.read_bytes()
    before = model.SerializeToString()
    graph = load_onnx(path)
    assert graph.name == "m"
    assert "linear" in graph.op_counts()  # the initializer was transposed... in the graph's copy
    assert model.SerializeToString() == before and path.read_bytes() == data
    assert sorted(tmp_path.iterdir()) == [path]
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]).shape, (6, 7))
    assert load_onnx(data).op_counts() == graph.op_counts()  # bytes work too


# --- bad inputs -----------------------------------------------------------------------------------------


def _valid_bytes():
    return make(
        [node("Conv", ["x", "W"], ["c"]), node("Relu", ["c"])], X4, ["y"], {"W": w(6, 4, 3, 3)}
    ).SerializeToString()


def test_missing_file(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(FrontendError, match="absent.onnx.*no such file"):
        load_onnx(path)


@pytest.mark.parametrize(
    "content", [b"", b"this is not an onnx model", bytes(range(256)) * 3], ids=["empty", "text", "garbage"]
)
def test_malformed_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(FrontendError, match="bad.onnx"):
        load_onnx(path)


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -3, -1])
def test_truncated_file(tmp_path, cut):
    data = _valid_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else len(data) + cut
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:n])
    with pytest.raises(FrontendError, match="cut.onnx"):
        load_onnx(path)


def test_cycle_names_nodes(tmp_path):
    model = make(
        [
            node("Add", ["x", "b"], ["a"], name="first"),
            node("Relu", ["a"], ["b"], name="second"),
            node("Neg", ["a"], name="last"),
        ],
        X3,
        ["y"],
    )
    path = tmp_path / "cycle.onnx"
    onnx.save(model, path)
    with pytest.raises(
        FrontendError, match=r"cycle.onnx.*cycle.*'first'.*'second'|cycle.onnx.*cycle.*'second'.*'first'"
    ):
        load_onnx(path)


def test_dangling_input_names_node_and_value(tmp_path):
    model = make([node("Relu", ["x"], ["r"]), node("Add", ["r", "ghost"], name="adder")], X3, ["y"])
    path = tmp_path / "dangling.onnx"
    onnx.save(model, path)
    with pytest.raises(FrontendError, match=r"dangling.onnx.*node 'adder' \(Add\) reads 'ghost'"):
        load_onnx(path)


def test_dangling_unnamed_node_and_proto_source():
    model = make([node("Relu", ["nowhere"])], X3, ["y"])
    with pytest.raises(FrontendError, match=r"ONNX model 'm'.*Relu node #0 \(output 'y'\) reads 'nowhere'"):
        load_onnx(model)


def test_duplicate_definition_and_undefined_output():
    model = make([node("Relu", ["x"], ["y"], name="one"), node("Neg", ["x"], ["y"], name="two")], X3, ["y"])
    with pytest.raises(FrontendError, match="'y' is defined twice.*'one'.*'two'"):
        load_onnx(model)
    model = make([node("Relu", ["x"], ["r"])], X3, ["y"])
    with pytest.raises(FrontendError, match="graph output 'y' is not defined"):
        load_onnx(model)


# --- torch exports -----------------------------------------------------------------------------------------


def export(module, args, **kw):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, **kw)
    return onnx.load_from_string(buf.getvalue())


class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, groups=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 6)
        self.emb = torch.nn.Embedding(11, 6)
        self.ln = torch.nn.LayerNorm(6)

    def forward(self, x, ids):
        h = torch.relu(self.bn(self.dw(self.conv(x))))
        h = torch.nn.functional.avg_pool2d(torch.nn.functional.max_pool2d(h, 2, ceil_mode=True), 1)
        h = torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1)
        t = self.fc(h)[:, None, :] + self.emb(ids)
        t = self.ln(torch.nn.functional.gelu(t) * torch.sigmoid(t) + torch.nn.functional.hardswish(t))
        a, b = torch.split(t, [2, 4], dim=-1)
        return torch.softmax(t @ t.transpose(1, 2), -1), torch.cat([b, a], -1)[:, -1], t.mean(1).clamp(-1, 1)


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("folding", [True, False])
def test_torch_export_roundtrip(opset, folding):
    torch.manual_seed(0)
    module = Mixed().eval()
    args = (torch.randn(2, 3, 16, 16), torch.randint(0, 11, (2, 4)))
    model = export(module, args, opset_version=opset, do_constant_folding=folding)
    feeds = {i.name: a.numpy() for i, a in zip(model.graph.input, args)}
    graph = roundtrip(
        model,
        {
            "conv",
            "batch_norm" if not folding else "conv",
            "linear",
            "embedding",
            "layer_norm",
            "gelu",
            "softmax",
            "split",
            "concat",
        },
        feeds=feeds,
    )
    if not folding:
        assert graph.num_parameters() == sum(p.numel() for p in module.parameters())
    if HAS_TORCH_EMITTER:
        with torch.no_grad():
            want = [t.numpy() for t in module(*args)]
        assert_close(graph.run([a.numpy() for a in args]), want)


@pytest.mark.skipif(not HAS_TORCH_EMITTER, reason="graphopt.emit.torch is not available yet")
def test_torch_to_onnx_to_graph_run_matches_torch():
    torch.manual_seed(1)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU6(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
        torch.nn.Hardsigmoid(),
    ).eval()
    x = torch.randn(3, 3, 8, 8)
    graph = load_onnx(export(module, (x,), do_constant_folding=False))
    with torch.no_grad():
        assert_close(graph.run([x.numpy()]), [module(x).numpy()])


# --- bundled models ------------------------------------------------------------------------------------------

MODEL_NAMES = ["resnet18", "mobilenet_v2", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registry_model_roundtrip(name):
    registry = pytest.importorskip("graphopt.models.registry")
    module, inputs = registry.get_model(name, batch_size=2, seed=0)
    model = export(module, inputs)
    feeds = {i.name: t.numpy() for i, t in zip(model.graph.input, inputs)}
    graph = load_onnx(model)
    assert not any(n.is_opaque for n in graph.nodes), graph.op_counts()
    got = run_onnx(graph.to_onnx(), feeds)
    assert_close(got, run_onnx(model, feeds))
    with torch.no_grad():
        want = module(*inputs)
    want = [want.numpy()] if isinstance(want, torch.Tensor) else [t.numpy() for t in want]
    assert_close(got, want, tol=1e-4)
    if HAS_TORCH_EMITTER:
        assert_close(graph.run([t.numpy() for t in inputs]), want, tol=1e-4)
