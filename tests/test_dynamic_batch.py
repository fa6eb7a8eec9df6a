"""Issue 16, item 1: input shapes and a symbolic batch through import, passes, TVM lowering and the
compiled model (one build serves batch 1, 3 and 8)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import graphopt
from graphopt.api import import_model
from graphopt.backends.tvm.compiled import compile_graph, load_compiled
from graphopt.cli import main
from graphopt.errors import BackendError, GraphoptError
from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.shapes import ShapeError, parse_input_shape


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """A dynamic-batch file from torch's default (dynamo) exporter: its input is f32[batch,3,16,16]."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dyn") / "cnn.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        SmallCNN().eval(), (torch.randn(2, 3, 16, 16),), path, input_names=["x"], dynamic_shapes={"x": {0: batch}}
    )
    return path


def reference(path, x):
    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


def test_parse_input_shape():
    assert parse_input_shape("x:1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("input.1:Nx3x224x224") == ("input.1", ("N", 3, 224, 224))
    assert parse_input_shape("x:batch,3,8,8") == ("x", ("batch", 3, 8, 8))
    for bad in ("x", "x:", "x:0x3", "x:1x-3"):
        with pytest.raises(ShapeError, match="--input-shape"):
            parse_input_shape(bad)


def test_shape_inference_carries_a_symbolic_batch_and_refuses_to_guess_a_product():
    g = Graph("g")
    g.add_input("x", TensorType(("N", 3, 4, 4)))
    w = g.add_param("w", np.ones((5, 3, 1, 1), np.float32))
    conv = g.add_node("conv", ["x", w], attrs={"pads": [0, 0, 0, 0], "stride": [1, 1], "dilation": [1, 1]})
    assert g.type_of(conv.outputs[0]) == TensorType(("N", 5, 4, 4))
    flat = g.add_node("flatten", [conv.outputs[0]], attrs={"start_dim": 0, "end_dim": -1})
    assert g.values[flat.outputs[0]].type is None  # N*80 is no single symbol: unknown, not a guess


def test_import_applies_static_or_symbolic_shapes_and_names_the_input_at_fault(dynamic_onnx):
    assert load_onnx(dynamic_onnx).type_of("x").shape == ("batch", 3, 16, 16)
    static = load_onnx(dynamic_onnx, input_shapes={"x": (2, 3, 16, 16)})
    assert static.type_of("x").shape == (2, 3, 16, 16) and static.type_of(static.outputs[0]).shape == (2, 10)
    dyn = load_onnx(dynamic_onnx, dynamic_batch=True)
    assert dyn.type_of(dyn.outputs[0]).shape == ("batch", 10)
    with pytest.raises(GraphoptError, match="input 'x' has size 3 on axis 1"):
        load_onnx(dynamic_onnx, input_shapes={"x": (1, 4, 16, 16)})
    with pytest.raises(GraphoptError, match="'y', which is not an input of the model; its inputs: x"):
        load_onnx(dynamic_onnx, input_shapes={"y": (1, 3, 16, 16)})


def test_one_dynamic_build_runs_batch_1_3_8_after_save_and_load(dynamic_onnx, tmp_path, capsys):
    out = tmp_path / "cnn.so"
    assert main(["-q", "compile", str(dynamic_onnx), "--input-shape", "x:Nx3x16x16", "-o", str(out)]) == 0
    assert "x: float32[N,3,16,16]" in capsys.readouterr().out
    model = load_compiled(out)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8):
        x = rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)
        y = model(x)
        assert y.shape == (batch, 10)
        np.testing.assert_allclose(y, reference(dynamic_onnx, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(BackendError, match=r"input 'x' expects float32\[N,3,16,16\] \(N: any size\), got float32\[2,4"):
        model(np.zeros((2, 4, 16, 16), np.float32))


def test_input_shape_builds_static_and_without_it_the_symbolic_file_builds_dynamic(dynamic_onnx):
    static = graphopt.optimize(dynamic_onnx, target="x86", input_shapes={"x": (2, 3, 16, 16)}, verify=False)
    assert static.inputs[0].shape == (2, 3, 16, 16)
    with pytest.raises(BackendError, match=r"expects float32\[2,3,16,16\], got float32\[3,3,16,16\]"):
        static(np.zeros((3, 3, 16, 16), np.float32))
    quantized = graphopt.optimize(dynamic_onnx, target="x86", pipeline="quantize", verify=False)
    assert quantized.inputs[0].shape == ("batch", 3, 16, 16)
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(quantized(x), reference(dynamic_onnx, x), atol=0.05)


def test_dynamic_batch_builds_for_arm(dynamic_onnx, tmp_path):
    compiled = compile_graph(load_onnx(dynamic_onnx, dynamic_batch=True), "arm")
    assert compiled.is_cross and compiled.inputs[0].shape == ("batch", 3, 16, 16)
    compiled.save(tmp_path / "cnn.tar")
    assert load_compiled(tmp_path / "cnn.tar").inputs[0].shape == ("batch", 3, 16, 16)


def test_a_module_traced_with_a_symbolic_batch_keeps_it_through_the_default_pipeline():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    compiled = graphopt.optimize(model, (torch.randn(1, 3, 16, 16),), target="x86", dynamic_batch=True)
    assert compiled.inputs[0].shape == ("N", 3, 16, 16)
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 16, 16)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(GraphoptError, match="input .x. has size 16 on axis 2"):
        import_model(model, (torch.randn(2, 3, 16, 16),), input_shapes={"x": (2, 3, 8, 8)})


def test_cli_opt_and_show_take_input_shapes(dynamic_onnx, tmp_path, capsys):
    out = tmp_path / "static.onnx"
    assert main(["-q", "opt", str(dynamic_onnx), "--input-shape", "x:4x3x16x16", "-o", str(out)]) == 0
    assert load_onnx(out).type_of("x").shape == (4, 3, 16, 16)
    capsys.readouterr()
    assert main(["show", str(out), "--dynamic-batch"]) == 0
    assert "%x: f32[N,3,16,16]" in capsys.readouterr().out
    assert main(["show", str(out), "--input-shape", "x:4x3x16"]) == 1
    assert "input 'x' has 4 dims 4x3x16x16; the shape given has 3" in capsys.readouterr().err
    assert main(["show", str(out), "--input-shape", "x:4x3x16x16", "--input-shape", "x:1x3x16x16"]) == 1
    assert "names input 'x' twice" in capsys.readouterr().err


def test_conv_and_depthwise_rules_schedule_a_symbolic_batch_and_it_runs_right():
    """Without this the convs fall to a generic rule: ResNet-18 ran 144x slower than its static build."""
    from tvm import tirx

    from graphopt.backends.tvm.lower import lower_to_relax
    from graphopt.backends.tvm.schedule import legalize
    from graphopt.backends.tvm.schedules import Conv2dNCHW, DepthwiseConv2dNCHW
    from graphopt.backends.tvm.targets import resolve_target

    rng = np.random.default_rng(0)
    g = Graph("dw")
    g.add_input("x", TensorType(("N", 8, 10, 10)))
    conv = dict(stride=[1, 1], dilation=[1, 1], pads=[1, 1, 1, 1])
    w = g.add_param("w", rng.standard_normal((16, 8, 3, 3)).astype(np.float32))
    dw = g.add_param("dw", rng.standard_normal((16, 1, 3, 3)).astype(np.float32))
    y = g.add_node("conv", ["x", w], attrs=conv).output
    g.set_outputs([g.add_node("conv", [y, dw], attrs={**conv, "groups": 16}).output])
    target = resolve_target("x86")
    mod = legalize(lower_to_relax(g), target)
    kernels = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    with target:
        assert any(Conv2dNCHW().apply(f, target, False) is not None for f in kernels)
        assert any(DepthwiseConv2dNCHW().apply(f, target, False) is not None for f in kernels)
    compiled = compile_graph(g, "x86")
    for batch in (1, 3):
        x = rng.standard_normal((batch, 8, 10, 10)).astype(np.float32)
        np.testing.assert_allclose(compiled(x), g.run([x])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("command", ["check", "reduce"])
def test_check_and_reduce_take_input_shapes_and_name_a_wrong_one(dynamic_onnx, tmp_path, capsys, command):
    tail = ["--min-sqnr", "40"] if command == "check" else ["-o", str(tmp_path / "min.onnx")]
    args = [command, str(dynamic_onnx), "-p", "fold-bn", *tail, "--input-shape", "x:2x4x16x16"]
    assert main(["-q", *args]) == 1
    assert "input 'x' has size 3 on axis 1" in capsys.readouterr().err
    if command == "check":
        assert main(["-q", *args[:-1], "x:2x3x16x16"]) == 0
        assert "1 of 1 budgets kept" in capsys.readouterr().out
