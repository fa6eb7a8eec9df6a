"""qdq-to-integer: Q/DQ conv and matmul patterns compiled by TVM compute in integers and match
onnxruntime's QDQ execution (QLinearConv / QLinearMatMul where it fuses) within one step."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.backends.tvm.lower import lower_to_relax  # noqa: E402
from graphopt.backends.tvm.relax_integer import qdq_to_integer  # noqa: E402
from graphopt.backends.tvm.relax_passes import graphopt_relax_passes  # noqa: E402
from graphopt.backends.tvm.schedule import build  # noqa: E402
from graphopt.ir.graph import Graph  # noqa: E402
from graphopt.ir.types import TensorType  # noqa: E402

INIT = np.random.default_rng(7)  # weights; the same on every call in this process order


class Builder:
    """A Q/DQ graph written by hand: quantized inputs, int8 weights, quantized outputs."""

    def __init__(self, name: str):
        self.g = Graph(name)
        self.n = 0

    def param(self, value) -> str:
        self.n += 1
        return self.g.add_param(f"p{self.n}", np.asarray(value))

    def qdq(self, x: str, scale: float, zero: int, dtype: str) -> str:
        """quantize -> dequantize of an activation, per tensor."""
        s, z = self.param(np.float32(scale)), self.param(np.array(zero, dtype))
        q = self.g.add_node("quantize", [x, s, z], attrs=dict(dtype=dtype)).output
        return self.g.add_node("dequantize", [q, s, z]).output

    def weight(self, shape, per_channel: bool, zero: int = 0) -> str:
        """An int8 weight parameter and its dequantize (per output channel: axis 0)."""
        q = INIT.integers(-127, 128, shape).astype("int8")
        if per_channel:
            s = INIT.uniform(0.004, 0.02, shape[0]).astype("float32")
            z, attrs = np.full(shape[0], zero, "int8"), dict(axis=0)
        else:
            s, z, attrs = np.float32(0.01), np.int8(zero), {}
        return self.g.add_node("dequantize", [self.param(q), self.param(s), self.param(z)], attrs=attrs).output

    def int32_bias(self, x_scale: float, w: str) -> str:
        """A bias stored as onnxruntime's quantizer writes it: int32 with scale sx * sw."""
        sw = self.g.params[self.g.producer(w).inputs[1]].data
        s = (np.float32(x_scale) * sw).astype("float32")
        q = INIT.integers(-2000, 2000, s.shape).astype("int32")
        d = self.g.add_node("dequantize", [self.param(q), self.param(s), self.param(np.zeros(s.shape, "int32"))],
                            attrs=dict(axis=0) if s.ndim else {})  # fmt: skip
        return d.output

    def quantize(self, y: str, scale: float, zero: int, dtype: str) -> str:
        s, z = self.param(np.float32(scale)), self.param(np.array(zero, dtype))
        return self.g.add_node("quantize", [y, s, z], attrs=dict(dtype=dtype)).output

    def node(self, op: str, inputs, **attrs) -> str:
        return self.g.add_node(op, list(inputs), attrs=attrs).output


def conv_attrs(stride=(1, 1), pads=(0, 0, 0, 0), groups=1):
    return dict(stride=stride, pads=pads, dilation=(1, 1), groups=groups)


def patterns() -> tuple[Graph, dict[str, float | None]]:
    """One graph, one output per pattern; the value is the output's quantisation step
    (None for a float output). Inputs: an image x and attention operands a, k."""
    b = Builder("qdq_patterns")
    x = b.g.add_input("x", TensorType((1, 4, 7, 7)))
    t = b.g.add_input("t", TensorType((2, 3, 8)))
    a = b.g.add_input("a", TensorType((1, 2, 3, 4)))
    k = b.g.add_input("k", TensorType((1, 2, 3, 4)))
    steps: dict[str, float | None] = {}
    xu = b.qdq(x, 0.03, 131, "uint8")  # uint8, off-centre zero point
    xs = b.qdq(x, 0.025, -9, "int8")

    # 1. uint8 conv, per-channel weight, asymmetric pads, int32 bias: onnxruntime's QLinearConv
    w1 = b.weight((6, 4, 3, 3), per_channel=True)
    y = b.node("conv", [xu, w1, b.int32_bias(0.03, w1)], **conv_attrs(pads=(1, 0, 2, 1)))
    steps[b.quantize(y, 0.08, 118, "uint8")] = 0.08
    # 2. int8 depthwise conv, stride 2, per-tensor weight, float bias, relu
    w2 = b.weight((4, 1, 3, 3), per_channel=False)
    y = b.node("conv", [xs, w2, b.param(INIT.standard_normal(4).astype("float32"))],
               **conv_attrs(stride=(2, 2), pads=(1, 1, 1, 1), groups=4))  # fmt: skip
    steps[b.quantize(b.node("relu", [y]), 0.02, -20, "int8")] = 0.02
    # 3. grouped conv with no quantize after it: dequantized to float, then the float bias
    w3 = b.weight((4, 2, 2, 2), per_channel=True)
    steps[b.node("conv", [xu, w3, b.param(np.float32([0.5, -1, 0, 2]))], **conv_attrs(pads=(1, 1, 0, 0), groups=2))] = (
        None
    )
    # 4. linear on a 3-d input, per-channel weight, bias, clip
    ts = b.qdq(t, 0.02, 5, "int8")
    y = b.node("linear", [ts, b.weight((5, 8), per_channel=True), b.param(INIT.standard_normal(5).astype("float32"))])
    steps[b.quantize(b.node("clip", [y], min=-0.5, max=0.6), 0.01, 3, "int8")] = 0.01
    # 5. attention: two activations, both with zero points: onnxruntime's QLinearMatMul
    aq = b.qdq(a, 0.05, 100, "uint8")
    kt = b.qdq(b.node("permute", [k], perm=(0, 1, 3, 2)), 0.04, -7, "int8")
    steps[b.quantize(b.node("matmul", [aq, kt]), 0.1, 130, "uint8")] = 0.1
    # 5b. the same with the transpose after the dequantize, and a float output
    kt = b.node("permute", [b.qdq(k, 0.04, -7, "int8")], perm=(0, 1, 3, 2))
    steps[b.node("matmul", [aq, kt])] = None
    # 6. not matched: a weight zero point (stays a float conv); dequantize -> softmax (float)
    steps[b.node("conv", [xu, b.weight((2, 4, 1, 1), per_channel=True, zero=3)], **conv_attrs())] = None
    steps[b.node("softmax", [aq], axis=-1)] = None
    b.g.set_outputs(list(steps))
    b.g.verify()
    return b.g, steps


@pytest.fixture(scope="module")
def case():
    g, steps = patterns()
    rng = np.random.default_rng(0)
    inputs = [
        rng.uniform(-5, 5, (1, 4, 7, 7)).astype("float32"),  # beyond the int8/uint8 ranges: saturates
        rng.uniform(-3, 3, (2, 3, 8)).astype("float32"),
        rng.uniform(-6, 6, (1, 2, 3, 4)).astype("float32"),
        rng.uniform(-6, 6, (1, 2, 3, 4)).astype("float32"),
    ]
    return g, steps, inputs


@pytest.fixture(scope="module")
def compiled(case):
    return compile_graph(case[0], "x86")


def products(mod: tvm.IRModule) -> list[tuple[str, tuple[str, ...], str]]:
    """(op, input dtypes, output dtype) of every conv2d / matmul in the module's main."""
    found = []

    def visit(e):
        if (
            isinstance(e, relax.Call)
            and isinstance(e.op, tvm.ir.Op)
            and e.op.name in ("relax.nn.conv2d", "relax.matmul")
        ):
            found.append((e.op.name.split(".")[-1], tuple(str(a.ty.dtype) for a in e.args), str(e.ty.dtype)))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def test_matched_products_are_integer(case):
    mod = lower_to_relax(case[0])
    with tvm.target.Target("llvm"):
        after = tvm.transform.Sequential(graphopt_relax_passes("x86"))(mod)
    got = sorted(products(after))
    assert got == sorted(
        [
            ("conv2d", ("uint8", "int8"), "int32"),  # 1
            ("conv2d", ("int8", "int8"), "int32"),  # 2, depthwise
            ("conv2d", ("uint8", "int8"), "int32"),  # 3, float output
            ("matmul", ("int8", "int8"), "int32"),  # 4, linear
            ("matmul", ("uint8", "int8"), "int32"),  # 5, attention
            ("matmul", ("uint8", "int8"), "int32"),  # 5b, transposed after dequantize, float output
            ("conv2d", ("float32", "float32"), "float32"),  # 6, weight zero point: not matched
        ]
    )
    script = after.script()
    # left in float: softmax's input, and pattern 6's input and weight
    assert "R.nn.softmax(" in script and script.count("R.dequantize(") == 3
    tvm.ir.assert_structural_equal(qdq_to_integer()(after), after)  # nothing left to match


def ort_run(graph: Graph, inputs, optimized_path) -> tuple[list[np.ndarray], list[str]]:
    """onnxruntime on graph.to_onnx() with its QDQ fusions: the outputs and the optimised op types."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # QDQ fusion, no NCHWc
    opts.optimized_model_filepath = str(optimized_path)
    sess = ort.InferenceSession(graph.to_onnx().SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, dict(zip(graph.inputs, inputs)))
    return outs, [n.op_type for n in onnx.load(str(optimized_path)).graph.node]


def within_one_step(got: np.ndarray, want: np.ndarray, step: float | None) -> float:
    """max |got - want| in quantisation steps (integers) or in absolute float terms."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if step is None:
        return float(np.max(np.abs(got - want)))
    return float(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))))


def test_integer_program_matches_onnxruntime_and_reference(case, compiled, tmp_path):
    g, steps, inputs = case
    got = compiled(*inputs)
    ref = g.run(inputs)
    ours, ops = ort_run(g, inputs, tmp_path / "optimized.onnx")
    assert "QLinearConv" in ops and "QLinearMatMul" in ops  # onnxruntime's integer kernels took part
    worst = {}
    for name, a, r, o in zip(steps, got, ref, ours):
        step = steps[name]
        tol = 1 if step is not None else 1e-4 * max(1.0, float(np.max(np.abs(r))))
        worst[name] = (within_one_step(a, o, step), within_one_step(a, np.asarray(r), step))
        assert worst[name][0] <= tol and worst[name][1] <= tol, (name, worst[name])
    quantized = [worst[n][0] for n in steps if steps[n] is not None]
    assert max(quantized) <= 1  # and the integer program is not trivially exact everywhere:
    assert any(np.any(a != 0) for a in got)


@pytest.mark.parametrize("target", ["arm", "cuda"])
def test_integer_program_builds_for(case, target):
    exe = build(lower_to_relax(case[0]), target)  # every kernel scheduled (GPU), compiled
    assert isinstance(exe, relax.VMExecutable)


@pytest.mark.gpu
@pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA device")
def test_integer_program_runs_on_cuda(case, compiled):
    g, steps, inputs = case
    for name, a, b in zip(steps, compile_graph(g, "cuda")(*inputs), compiled(*inputs)):
        assert within_one_step(a, b, steps[name]) <= (1 if steps[name] else 1e-4), name


@pytest.mark.slow
def test_integer_conv_runs_on_emulated_aarch64():
    from graphopt.backends.tvm.emulator import emulated_aarch64_server, emulator_available

    if not emulator_available() or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("emulated aarch64 server or cross compiler not set up")
    b = Builder("arm_qconv")
    x = b.g.add_input("x", TensorType((1, 4, 7, 7)))
    w = b.weight((6, 4, 3, 3), per_channel=True)
    y = b.node("conv", [b.qdq(x, 0.03, 131, "uint8"), w, b.int32_bias(0.03, w)], **conv_attrs(pads=(1, 0, 2, 1)))
    b.g.set_outputs([b.quantize(y, 0.08, 118, "uint8")])
    xi = np.random.default_rng(1).uniform(-5, 5, (1, 4, 7, 7)).astype("float32")
    model = compile_graph(b.g, "arm")
    with emulated_aarch64_server() as emu:
        got = model.run_remote(emu.connect(), xi)
    want = b.g.run([xi])[0]
    assert got.dtype == want.dtype == np.uint8
    assert np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))) <= 1


def test_quantized_mlp_with_a_2d_batch_keeps_its_output_shape():
    """A bias of a 2-d integer matmul broadcasts over its last axis (it was reshaped like a conv's:
    [4, 64] + [1, 64, 1, 1] gave [1, 64, 4, 64])."""
    import torch

    import graphopt
    from graphopt.passes import PassContext, Pipeline

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    x = np.random.default_rng(0).standard_normal((4, 32)).astype("float32")
    q = Pipeline.parse("quantize").run(graphopt.trace(mlp, (torch.from_numpy(x),)), PassContext()).graph
    got = np.asarray(compile_graph(q, "x86")(x))
    want = q.run([x])[0]
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, want, atol=float(np.abs(want).max()) / 32)
