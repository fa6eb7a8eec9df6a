"""Lowering to Relax: every rule matches its op's torch reference, built for the host CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.backends.tvm.lower import RULES, lower_to_relax  # noqa: E402
from graphopt.errors import BackendError  # noqa: E402
from graphopt.ir.graph import Graph  # noqa: E402
from graphopt.ir.ops import OPS  # noqa: E402
from graphopt.ir.types import TensorType  # noqa: E402

HOST = "x86"
rng = np.random.default_rng(0)


def rand(*shape, lo=-1.0, hi=1.0, dtype="float32"):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def ints(*shape, lo=-100, hi=100, dtype="int8"):
    return rng.integers(lo, hi, size=shape).astype(dtype)


def I(a):  # noqa: E743 - a graph input
    return ("input", a)


def P(a):  # a parameter
    return ("param", a)


def reference(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate `graph` with the ops' torch references, node by node."""
    env = {n: torch.from_numpy(np.asarray(a)) for n, a in zip(graph.inputs, inputs)}
    env.update({n: torch.tensor(p.data) for n, p in graph.params.items()})
    for node in graph.nodes:
        out = OPS[node.op].impl(*[env[v] for v in node.inputs], **node.attrs)
        outs = out if isinstance(out, tuple) else (out,)
        env.update(zip(node.outputs, outs))
    return [env[o].numpy() for o in graph.outputs]


def single_op(op: str, args, attrs=None) -> tuple[Graph, list[np.ndarray]]:
    g = Graph(op)
    names, feeds = [], []
    for i, (kind, a) in enumerate(args):
        if kind == "param":
            names.append(g.add_param(f"p{i}", a))
        else:
            names.append(g.add_input(f"x{i}", TensorType.of(a)))
            feeds.append(a)
    node = g.add_node(op, names, attrs=attrs or {}, name=op)
    g.set_outputs(node.outputs)
    return g, feeds


def check(graph: Graph, feeds, atol=1e-5, rtol=1e-5):
    got = compile_graph(graph, HOST)(*feeds)
    got = got if isinstance(got, tuple) else (got,)
    want = reference(graph, feeds)
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        assert g_.dtype == w.dtype and g_.shape == w.shape
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g_, w, atol=atol, rtol=rtol)
        else:
            np.testing.assert_array_equal(g_, w)


def conv_attrs(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    return dict(stride=stride, pads=pads, dilation=dilation, groups=groups)


def pool_attrs(k=(3, 3), s=(2, 2), pads=(1, 1, 1, 1), ceil_mode=False, **kw):
    return dict(kernel_size=k, stride=s, pads=pads, ceil_mode=ceil_mode, **kw)


UNARY = ["relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "neg", "exp", "erf", "abs", "reciprocal"]
POSITIVE = ["log", "sqrt", "rsqrt"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]
HALVES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, -128.5, 300.0, -300.0, 0.26], dtype="float32")

CASES = [
    # conv: 2-d, stride, groups, depthwise, dilation, asymmetric pads, 1-d
    ("conv2d", "conv", [I(rand(1, 3, 8, 8)), P(rand(4, 3, 3, 3)), P(rand(4))], conv_attrs(pads=(1, 1, 1, 1))),
    ("conv2d-stride-nobias", "conv", [I(rand(2, 3, 9, 9)), P(rand(4, 3, 3, 3))], conv_attrs(stride=(2, 2))),
    (
        "conv2d-groups",
        "conv",
        [I(rand(1, 4, 7, 7)), P(rand(6, 2, 3, 3)), P(rand(6))],
        conv_attrs(pads=(1, 1, 1, 1), groups=2),
    ),
    (
        "conv2d-depthwise",
        "conv",
        [I(rand(1, 4, 8, 8)), P(rand(4, 1, 3, 3)), P(rand(4))],
        conv_attrs(stride=(2, 2), pads=(1, 1, 1, 1), groups=4),
    ),
    (
        "conv2d-dilation",
        "conv",
        [I(rand(1, 2, 9, 9)), P(rand(3, 2, 3, 3))],
        conv_attrs(pads=(2, 2, 2, 2), dilation=(2, 2)),
    ),
    (
        "conv2d-asym-pads",
        "conv",
        [I(rand(1, 2, 8, 8)), P(rand(3, 2, 3, 3)), P(rand(3))],
        conv_attrs(stride=(2, 2), pads=(0, 1, 1, 2)),
    ),
    (
        "conv1d",
        "conv",
        [I(rand(2, 3, 10)), P(rand(5, 3, 3)), P(rand(5))],
        dict(stride=(2,), pads=(1, 0), dilation=(1,)),
    ),
    (
        "conv1d-groups-dilation",
        "conv",
        [I(rand(1, 4, 12)), P(rand(4, 2, 3))],
        dict(stride=(1,), pads=(2, 2), dilation=(2,), groups=2),
    ),
    ("conv2d-input-weight", "conv", [I(rand(1, 2, 5, 5)), I(rand(3, 2, 3, 3))], conv_attrs()),
    # transposed conv: stride + output padding, groups + dilation, asymmetric pads, 1-d
    (
        "conv-transpose2d",
        "conv_transpose",
        [I(rand(1, 4, 5, 5)), P(rand(4, 3, 3, 3)), P(rand(3))],
        dict(conv_attrs(stride=(2, 2), pads=(1, 1, 1, 1)), output_padding=(1, 1)),
    ),
    (
        "conv-transpose2d-groups-dilation",
        "conv_transpose",
        [I(rand(2, 4, 4, 4)), P(rand(4, 3, 3, 3))],
        dict(conv_attrs(dilation=(2, 1), groups=2), output_padding=(0, 0)),
    ),
    (
        "conv-transpose2d-asym-pads",
        "conv_transpose",
        [I(rand(1, 2, 4, 4)), P(rand(2, 3, 3, 3)), P(rand(3))],
        dict(conv_attrs(stride=(2, 2), pads=(1, 0, 0, 2)), output_padding=(1, 1)),
    ),
    (
        "conv-transpose1d",
        "conv_transpose",
        [I(rand(1, 3, 6)), P(rand(3, 2, 4))],
        dict(stride=(3,), pads=(1, 1), dilation=(1,), output_padding=(2,)),
    ),
    # resize: nearest (x2, to a size), nearest-exact, linear with and without align_corners,
    # a scale factor whose size rounds down, cubic, 1-d
    ("resize-nearest", "resize", [I(rand(1, 2, 4, 5))], dict(size=(8, 10), scales=(2.0, 2.0))),
    ("resize-nearest-size", "resize", [I(rand(1, 2, 4, 5))], dict(size=(7, 3))),
    ("resize-nearest-exact", "resize", [I(rand(1, 2, 4, 5))], dict(size=(6, 9), mode="nearest-exact")),
    ("resize-bilinear", "resize", [I(rand(1, 2, 4, 5))], dict(size=(8, 10), mode="linear", scales=(2.0, 2.0))),
    ("resize-bilinear-ac", "resize", [I(rand(1, 2, 4, 5))], dict(size=(7, 9), mode="linear", align_corners=True)),
    ("resize-bilinear-x1.5", "resize", [I(rand(1, 2, 5, 5))], dict(size=(7, 7), mode="linear", scales=(1.5, 1.5))),
    ("resize-bicubic", "resize", [I(rand(1, 2, 4, 5))], dict(size=(5, 7), mode="cubic")),
    ("resize-linear1d", "resize", [I(rand(2, 3, 6))], dict(size=(9,), mode="linear", scales=(1.5,))),
    ("pixel-shuffle", "pixel_shuffle", [I(rand(1, 8, 3, 4))], dict(upscale_factor=2)),
    ("pixel-unshuffle", "pixel_unshuffle", [I(rand(1, 2, 6, 4))], dict(downscale_factor=2)),
    # comparisons (mixed dtypes compare in torch's promoted dtype) and where
    ("equal", "equal", [I(ints(3, 4, lo=0, hi=3)), I(ints(4, lo=0, hi=3))], {}),
    ("less", "less", [I(rand(3, 4)), P(np.array(0.25, "float32"))], {}),
    ("greater-int-float", "greater", [I(ints(3, 4, dtype="int64")), P(np.array(0.5, "float32"))], {}),
    ("less-equal", "less_equal", [I(rand(3, 4)), I(rand(3, 1))], {}),
    ("greater-equal", "greater_equal", [I(rand(2, 3)), I(rand(2, 3))], {}),
    ("where", "where", [I(rand(3, 4) > 0), I(rand(3, 4)), P(np.array(0.0, "float32"))], {}),
    ("where-broadcast", "where", [I(rand(4) > 0), I(rand(3, 1)), I(rand(3, 4))], {}),
    # einsum: matmul-shaped (batch, contracted, free letters), outer product, a trace (R.einsum)
    ("einsum-bmm", "einsum", [I(rand(2, 3, 4, 5)), I(rand(2, 6, 4, 5))], dict(equation="bchw,bdhw->bcd")),
    ("einsum-permuted-out", "einsum", [I(rand(3, 4)), I(rand(5, 4))], dict(equation="ik,jk->ji")),
    ("einsum-outer", "einsum", [I(rand(3)), I(rand(4))], dict(equation="i,j->ij")),
    ("einsum-trace", "einsum", [I(rand(4, 4))], dict(equation="ii->")),
    ("einsum-three", "einsum", [I(rand(2, 3)), I(rand(3, 4)), I(rand(4, 2))], dict(equation="ij,jk,kl->il")),
    # linear algebra and normalization
    ("linear", "linear", [I(rand(2, 5, 8)), P(rand(6, 8)), P(rand(6))], {}),
    ("linear-nobias", "linear", [I(rand(3, 8)), P(rand(6, 8))], {}),
    ("matmul-3d-2d", "matmul", [I(rand(2, 3, 4)), P(rand(4, 5))], {}),
    ("matmul-broadcast", "matmul", [I(rand(2, 1, 3, 4)), I(rand(3, 4, 5))], {}),
    ("matmul-vec-mat", "matmul", [I(rand(4)), I(rand(4, 5))], {}),
    ("matmul-mat-vec", "matmul", [I(rand(3, 4)), I(rand(4))], {}),
    (
        "batch_norm",
        "batch_norm",
        [I(rand(2, 4, 5, 5)), P(rand(4)), P(rand(4)), P(rand(4)), P(rand(4, lo=0.1, hi=2.0))],
        dict(eps=1e-3),
    ),
    (
        "batch_norm-2d",
        "batch_norm",
        [I(rand(3, 4)), P(rand(4)), P(rand(4)), P(rand(4)), P(rand(4, lo=0.1, hi=2.0))],
        {},
    ),
    ("layer_norm", "layer_norm", [I(rand(2, 5, 8)), P(rand(8)), P(rand(8))], dict(normalized_shape=(8,))),
    ("layer_norm-2dims-noaffine", "layer_norm", [I(rand(2, 5, 8))], dict(normalized_shape=(5, 8), eps=1e-6)),
    # elementwise
    *[(op, op, [I(rand(2, 3, 4, 5, lo=-4, hi=4))], {}) for op in UNARY],
    *[(op, op, [I(rand(2, 3, 4, 5, lo=0.1, hi=4))], {}) for op in POSITIVE],
    ("gelu", "gelu", [I(rand(2, 3, 8, lo=-4, hi=4))], {}),
    ("gelu-tanh", "gelu", [I(rand(2, 3, 8, lo=-4, hi=4))], dict(approximate="tanh")),
    ("clip", "clip", [I(rand(2, 3, 8))], dict(min=-0.5, max=0.5)),
    ("clip-relu6", "clip", [I(rand(2, 3, 8, lo=-8, hi=8))], dict(min=0, max=6)),
    ("clip-min-only", "clip", [I(rand(2, 3, 8))], dict(min=0.25)),
    ("clip-int", "clip", [I(ints(2, 8, dtype="int32"))], dict(max=10)),
    *[(op, op, [I(rand(2, 3, 4)), P(rand(4, lo=0.5, hi=2.0))], {}) for op in BINARY],
    ("pow", "pow", [I(rand(2, 3, 4, lo=0.1, hi=3)), P(rand(3, 1, lo=-2, hi=2))], {}),
    ("add-scalar-param", "add", [I(rand(2, 3)), P(np.array(0.5, dtype="float32"))], {}),
    ("mul-inputs-broadcast", "mul", [I(rand(2, 1, 4)), I(rand(3, 1))], {}),
    ("add-int-float", "add", [I(ints(2, 3, dtype="int32")), P(rand(3))], {}),
    ("div-int", "div", [I(ints(2, 3, lo=1, dtype="int64")), I(ints(2, 3, lo=1, dtype="int64"))], {}),
    # pooling and reductions
    ("max_pool2d", "max_pool", [I(rand(1, 3, 8, 8))], pool_attrs(dilation=(1, 1))),
    (
        "max_pool2d-ceil",
        "max_pool",
        [I(rand(1, 2, 8, 8))],
        pool_attrs(pads=(0, 0, 0, 0), ceil_mode=True, dilation=(1, 1)),
    ),
    (
        "max_pool2d-ceil-pad",
        "max_pool",
        [I(rand(1, 2, 10, 9))],
        pool_attrs(k=(2, 3), s=(3, 2), pads=(1, 1, 1, 1), ceil_mode=True, dilation=(1, 1)),
    ),
    (
        "max_pool2d-dilation",
        "max_pool",
        [I(rand(1, 2, 9, 9))],
        pool_attrs(pads=(0, 0, 0, 0), s=(1, 1), dilation=(2, 2)),
    ),
    (
        "max_pool2d-asym-pads",
        "max_pool",
        [I(rand(1, 2, 7, 7))],
        pool_attrs(k=(2, 2), pads=(0, 0, 1, 1), dilation=(1, 1)),
    ),
    ("max_pool1d", "max_pool", [I(rand(2, 3, 11))], dict(kernel_size=(3,), stride=(2,), pads=(1, 1), dilation=(1,))),
    ("avg_pool2d", "avg_pool", [I(rand(1, 3, 8, 8))], pool_attrs()),
    ("avg_pool2d-exclude-pad", "avg_pool", [I(rand(1, 3, 8, 8))], pool_attrs(count_include_pad=False)),
    ("avg_pool2d-ceil", "avg_pool", [I(rand(1, 2, 8, 8))], pool_attrs(ceil_mode=True)),
    (
        "avg_pool2d-ceil-nopad",
        "avg_pool",
        [I(rand(1, 2, 7, 8))],
        pool_attrs(k=(2, 2), pads=(0, 0, 0, 0), ceil_mode=True),
    ),
    ("avg_pool2d-ceil-exclude", "avg_pool", [I(rand(1, 2, 8, 8))], pool_attrs(ceil_mode=True, count_include_pad=False)),
    ("avg_pool1d", "avg_pool", [I(rand(2, 3, 11))], dict(kernel_size=(3,), stride=(2,), pads=(1, 1))),
    ("adaptive_avg_pool-global", "adaptive_avg_pool", [I(rand(2, 3, 7, 7))], dict(output_size=(1, 1))),
    ("adaptive_avg_pool-uneven", "adaptive_avg_pool", [I(rand(1, 3, 7, 10))], dict(output_size=(3, 4))),
    ("adaptive_avg_pool1d", "adaptive_avg_pool", [I(rand(1, 3, 10))], dict(output_size=(3,))),
    ("adaptive_avg_pool-divisible", "adaptive_avg_pool", [I(rand(1, 3, 8, 6))], dict(output_size=(4, 3))),
    ("adaptive_avg_pool3d-uneven", "adaptive_avg_pool", [I(rand(1, 2, 5, 6, 7))], dict(output_size=(2, 4, 3))),
    ("adaptive_max_pool-divisible", "adaptive_max_pool", [I(rand(1, 3, 8, 6))], dict(output_size=(2, 3))),
    ("adaptive_max_pool3d-uneven", "adaptive_max_pool", [I(rand(1, 2, 5, 6, 7))], dict(output_size=(3, 4, 2))),
    ("adaptive_max_pool-global", "adaptive_max_pool", [I(rand(2, 3, 7, 7))], dict(output_size=(1, 1))),
    ("adaptive_max_pool-uneven", "adaptive_max_pool", [I(rand(1, 3, 7, 10))], dict(output_size=(3, 4))),
    ("adaptive_max_pool1d", "adaptive_max_pool", [I(rand(1, 3, 10))], dict(output_size=(4,))),
    ("mean", "mean", [I(rand(2, 3, 4, 5))], dict(dims=(2, 3), keepdim=True)),
    ("mean-last", "mean", [I(rand(2, 3, 4))], dict(dims=(-1,))),
    ("sum", "sum", [I(rand(2, 3, 4))], dict(dims=(1,))),
    ("sum-int", "sum", [I(ints(2, 3, 4, dtype="int32"))], dict(dims=(0, 2), keepdim=True)),
    ("softmax", "softmax", [I(rand(2, 3, 8, lo=-5, hi=5))], dict(axis=-1)),
    ("softmax-axis1", "softmax", [I(rand(2, 3, 8))], dict(axis=1)),
    # shape and data movement
    ("concat", "concat", [I(rand(2, 1, 4)), P(rand(2, 3, 4)), I(rand(2, 2, 4))], dict(axis=1)),
    ("split", "split", [I(rand(2, 6, 3))], dict(axis=1, sizes=(2, 3, 1))),
    ("reshape-0-neg1", "reshape", [I(rand(2, 3, 4))], dict(shape=(0, -1))),
    ("reshape", "reshape", [I(rand(2, 3, 4))], dict(shape=(4, -1, 2))),
    ("flatten", "flatten", [I(rand(2, 3, 4, 5))], {}),
    ("squeeze", "squeeze", [I(rand(2, 1, 3, 1))], dict(axes=(1, -1))),
    ("squeeze-nothing", "squeeze", [I(rand(2, 3))], dict(axes=())),
    ("unsqueeze", "unsqueeze", [I(rand(2, 3))], dict(axes=(0, -1))),
    ("unsqueeze-between", "unsqueeze", [I(rand(2, 3))], dict(axes=(3, 1))),
    ("flatten-range", "flatten", [I(rand(2, 3, 4, 5))], dict(start_dim=1, end_dim=2)),
    ("permute", "permute", [I(rand(2, 3, 4, 5))], dict(perm=(0, 2, 3, 1))),
    ("expand", "expand", [I(rand(3, 1))], dict(shape=(2, -1, 4))),
    ("expand-same-rank", "expand", [I(rand(1, 3, 1))], dict(shape=(2, 3, 5))),
    ("slice", "slice", [I(rand(2, 6, 4))], dict(axis=1, start=1, end=4)),
    ("slice-step", "slice", [I(rand(2, 7, 4))], dict(axis=1, start=0, end=7, step=2)),
    ("slice-negative-open", "slice", [I(rand(2, 6, 5))], dict(axis=-1, start=-3, end=2**63 - 1)),
    ("select", "select", [I(rand(2, 6, 4))], dict(axis=1, index=-1)),
    ("select-first", "select", [I(rand(3, 4))], dict(axis=0, index=1)),
    ("embedding", "embedding", [I(rng.integers(0, 10, size=(2, 5))), P(rand(10, 4))], {}),
    ("embedding-int32", "embedding", [I(rng.integers(0, 10, size=(7,)).astype("int32")), P(rand(10, 4))], {}),
    ("cast-float-int", "cast", [I(rand(2, 8, lo=-10, hi=10))], dict(dtype="int32")),
    (
        "cast-float-bool",
        "cast",
        [I(np.array([[0.0, 0.5, -0.25, 2.0], [0.0, 0.0, 1e-3, -3.0]], dtype="float32"))],
        dict(dtype="bool"),
    ),
    ("cast-int-float", "cast", [I(ints(2, 8, dtype="int64"))], dict(dtype="float32")),
    ("cast-half", "cast", [I(rand(2, 8))], dict(dtype="float16")),
    ("identity", "identity", [I(rand(2, 3))], {}),
    ("dropout", "dropout", [I(rand(2, 3))], dict(p=0.1)),
    # quantization: per-tensor, halves (round-to-even), saturation, uint8, per-channel
    ("quantize", "quantize", [I(HALVES), P(np.array(1.0, "float32")), P(np.array(0, "int8"))], {}),
    (
        "quantize-zp",
        "quantize",
        [I(rand(2, 3, 8, lo=-3, hi=3)), P(np.array(0.02, "float32")), P(np.array(5, "int8"))],
        {},
    ),
    (
        "quantize-uint8",
        "quantize",
        [I(rand(2, 8, lo=-1, hi=3)), P(np.array(0.01, "float32")), P(np.array(128, "uint8"))],
        dict(dtype="uint8"),
    ),
    (
        "quantize-per-channel",
        "quantize",
        [I(rand(2, 3, 4, 4)), P(rand(3, lo=0.005, hi=0.02)), P(ints(3, lo=-5, hi=5))],
        dict(axis=1),
    ),
    (
        "quantize-per-channel-neg-axis",
        "quantize",
        [I(rand(2, 4, 3)), P(rand(3, lo=0.005, hi=0.02)), P(ints(3, lo=-5, hi=5))],
        dict(axis=-1),
    ),
    ("quantize-vec-scale", "quantize", [I(rand(4, 3)), P(np.array([0.01], "float32")), P(np.array([3], "int8"))], {}),
    (
        "quantize-broadcast-scale",
        "quantize",
        [I(rand(4, 3)), P(rand(3, lo=0.005, hi=0.02)), P(ints(3, lo=-5, hi=5))],
        {},
    ),
    (
        "dequantize-broadcast-scale",
        "dequantize",
        [I(ints(4, 3)), P(rand(3, lo=0.005, hi=0.02)), P(ints(3, lo=-5, hi=5))],
        {},
    ),
    ("dequantize", "dequantize", [I(ints(2, 3, 8)), P(np.array(0.05, "float32")), P(np.array(-3, "int8"))], {}),
    (
        "dequantize-per-channel",
        "dequantize",
        [P(ints(4, 3, 3, 3, lo=-127, hi=127)), P(rand(4, lo=0.001, hi=0.01)), P(np.zeros(4, "int8"))],
        dict(axis=0),
    ),
    (
        "dequantize-uint8",
        "dequantize",
        [I(ints(2, 8, lo=0, hi=255, dtype="uint8")), P(np.array(0.1, "float32")), P(np.array(128, "uint8"))],
        {},
    ),
    (
        "dequantize-int32",
        "dequantize",
        [P(ints(6, lo=-10000, hi=10000, dtype="int32")), P(rand(6, lo=1e-4, hi=1e-3)), P(np.zeros(6, "int32"))],
        dict(axis=0),
    ),
]


@pytest.mark.parametrize("op,args,attrs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_matches_reference(op, args, attrs):
    graph, feeds = single_op(op, args, attrs)
    check(graph, feeds, atol=1e-5, rtol=1e-5)


def test_every_op_has_a_rule_and_a_case():
    assert set(RULES) == set(OPS)
    assert {c[1] for c in CASES} == set(OPS)


def test_dequantize_constant_graph_output_is_lowered():
    # A graph whose output depends on parameters only: one input is passed through.
    g = Graph("consts")
    x = g.add_input("x", TensorType((2,), "float32"))
    w = g.add_param("w", ints(3, 2))
    dq = g.add_node(
        "dequantize", [w, g.add_param("s", np.array(0.5, "float32")), g.add_param("z", np.array(0, "int8"))]
    )
    g.set_outputs([dq.output, x])
    check(g, [rand(2)])


def test_split_outputs_are_a_tuple():
    g, feeds = single_op("split", [I(rand(2, 5))], dict(axis=1, sizes=(1, 4)))
    out = compile_graph(g, HOST)(*feeds)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 1), (2, 4)]


# --- whole models -------------------------------------------------------------------


def _conv_bn_relu(g, x, cin, cout, stride, relu=True, name="c"):
    w = g.add_param(f"{name}.w", rand(cout, cin, 3, 3) * 0.3)
    c = g.add_node("conv", [x, w], attrs=conv_attrs(stride=(stride, stride), pads=(1, 1, 1, 1)), name=name).output
    bn = [
        g.add_param(f"{name}.bn.{k}", v)
        for k, v in [
            ("w", rand(cout, lo=0.5, hi=1.5)),
            ("b", rand(cout)),
            ("m", rand(cout)),
            ("v", rand(cout, lo=0.5, hi=2.0)),
        ]
    ]
    y = g.add_node("batch_norm", [c, *bn], name=f"{name}.bn").output
    return g.add_node("relu", [y], name=f"{name}.relu").output if relu else y


def conv_net() -> Graph:
    """conv-bn-relu, max pool, a residual block with a strided shortcut, pools, linear."""
    g = Graph("convnet")
    x = g.add_input("x", TensorType((2, 3, 16, 16)))
    y = _conv_bn_relu(g, x, 3, 8, 1, name="stem")
    y = g.add_node("max_pool", [y], attrs=pool_attrs(dilation=(1, 1))).output
    a = _conv_bn_relu(g, y, 8, 16, 2, name="b1")
    a = _conv_bn_relu(g, a, 16, 16, 1, relu=False, name="b2")
    sw = g.add_param("short.w", rand(16, 8, 1, 1))
    s = g.add_node("conv", [y, sw], attrs=conv_attrs(stride=(2, 2)), name="short").output
    y = g.add_node("relu", [g.add_node("add", [a, s]).output]).output
    y = g.add_node("avg_pool", [y], attrs=pool_attrs(k=(2, 2), s=(1, 1), pads=(0, 0, 0, 0))).output
    y = g.add_node("adaptive_avg_pool", [y], attrs=dict(output_size=(1, 1))).output
    y = g.add_node("flatten", [y]).output
    y = g.add_node("linear", [y, g.add_param("fc.w", rand(10, 16)), g.add_param("fc.b", rand(10))])
    g.set_outputs(y.outputs)
    return g


def transformer_block(seq=8, dim=16, heads=2) -> Graph:
    """Pre-norm block with explicit attention (matmul, scale, softmax) and a GELU MLP."""
    g = Graph("block")
    hd = dim // heads
    x = g.add_input("x", TensorType((1, seq, dim)))

    def lin(v, n_in, n_out, name):
        w, b = g.add_param(f"{name}.w", rand(n_out, n_in) * 0.3), g.add_param(f"{name}.b", rand(n_out))
        return g.add_node("linear", [v, w, b], name=name).output

    def ln(v, name):
        w, b = g.add_param(f"{name}.w", rand(dim, lo=0.5, hi=1.5)), g.add_param(f"{name}.b", rand(dim))
        return g.add_node("layer_norm", [v, w, b], attrs=dict(normalized_shape=(dim,)), name=name).output

    def heads_of(v, name):
        r = g.add_node("reshape", [v], attrs=dict(shape=(0, 0, heads, hd)), name=f"{name}.r").output
        return g.add_node("permute", [r], attrs=dict(perm=(0, 2, 1, 3)), name=f"{name}.p").output

    h = ln(x, "ln1")
    qkv = lin(h, dim, 3 * dim, "qkv")
    q, k, v = g.add_node("split", [qkv], attrs=dict(axis=-1, sizes=(dim, dim, dim))).outputs
    q, k, v = heads_of(q, "q"), heads_of(k, "k"), heads_of(v, "v")
    kt = g.add_node("permute", [k], attrs=dict(perm=(0, 1, 3, 2))).output
    s = g.add_node("matmul", [q, kt]).output
    s = g.add_node("mul", [s, g.add_param("scale", np.array(hd**-0.5, "float32"))]).output
    a = g.add_node("softmax", [s], attrs=dict(axis=-1)).output
    o = g.add_node("matmul", [a, v]).output
    o = g.add_node("permute", [o], attrs=dict(perm=(0, 2, 1, 3))).output
    o = g.add_node("reshape", [o], attrs=dict(shape=(1, seq, dim))).output
    x = g.add_node("add", [x, lin(o, dim, dim, "proj")]).output
    m = lin(ln(x, "ln2"), dim, 4 * dim, "fc1")
    m = g.add_node("gelu", [m]).output
    x = g.add_node("add", [x, lin(m, 4 * dim, dim, "fc2")]).output
    g.set_outputs([x])
    return g


def qdq_net() -> Graph:
    """quantize -> dequantize on activations, int8 per-channel weights -> dequantize -> conv."""
    g = Graph("qdq")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    s, z = g.add_param("xs", np.array(0.02, "float32")), g.add_param("xz", np.array(0, "int8"))
    q = g.add_node("quantize", [x, s, z]).output
    xd = g.add_node("dequantize", [q, s, z]).output
    wq = g.add_param("wq", ints(4, 3, 3, 3, lo=-127, hi=127))
    ws, wz = g.add_param("ws", rand(4, lo=0.001, hi=0.01)), g.add_param("wz", np.zeros(4, "int8"))
    w = g.add_node("dequantize", [wq, ws, wz], attrs=dict(axis=0)).output
    y = g.add_node("conv", [xd, w, g.add_param("b", rand(4))], attrs=conv_attrs(pads=(1, 1, 1, 1)))
    g.set_outputs(y.outputs)
    return g


@pytest.mark.parametrize(
    "make,shape",
    [(conv_net, (2, 3, 16, 16)), (transformer_block, (1, 8, 16)), (qdq_net, (1, 3, 8, 8))],
    ids=["convnet", "transformer", "qdq"],
)
def test_whole_model(make, shape):
    g = make()
    g.verify()
    check(g, [rand(*shape)], atol=1e-4, rtol=1e-4)


def test_relax_names_follow_the_graph():
    text = lower_to_relax(conv_net()).script()
    assert "stem_bn" in text and 'def main(x: R.Tensor((2, 3, 16, 16), dtype="float32"))' in text


# --- errors ----------------------------------------------------------------------------


def test_opaque_node_is_named():
    g = Graph("opaque")
    x = g.add_input("x", TensorType((2, 3)))
    n = g.add_node(
        "opaque",
        [x],
        name="flip",
        output_types=[TensorType((2, 3))],
        attrs={"framework": "torch", "target": "aten.flip.default", "args": (), "kwargs": {}},
    )
    g.set_outputs(n.outputs)
    with pytest.raises(
        BackendError,
        match=r"node 'flip' \(opaque aten.flip.default\) cannot be "
        r"lowered to TVM",
    ):
        lower_to_relax(g)


def test_symbolic_input_lowers_to_a_symbolic_relax_shape_and_an_untyped_input_is_named():
    g = Graph("dyn")
    x = g.add_input("x", TensorType(("batch", 3)))
    g.set_outputs(g.add_node("relu", [x]).outputs)
    assert "R.Tensor((batch, 3)" in lower_to_relax(g).script()
    g.set_type(x, None)
    with pytest.raises(BackendError, match="graph input 'x' has no known type"):
        lower_to_relax(g)


def test_traced_model_matches_torch():
    fx = pytest.importorskip("graphopt.frontends.fx")
    from graphopt.models import get_model

    model, inputs = get_model("digits_cnn")
    graph = fx.trace(model, inputs)
    got = compile_graph(graph, HOST)(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
