"""CompiledModel: calling, input checks, save/load, cross (aarch64) and CUDA builds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

tvm = pytest.importorskip("tvm")

import graphopt  # noqa: E402
from graphopt.backends.tvm.compiled import (  # noqa: E402
    CompiledModel,
    compile_graph,
    load_compiled,
    metadata_path,
)
from graphopt.errors import BackendError  # noqa: E402
from graphopt.ir.graph import Graph  # noqa: E402
from graphopt.ir.ops import OPS  # noqa: E402
from graphopt.ir.types import TensorType  # noqa: E402

rng = np.random.default_rng(0)
CROSS_CXX = "aarch64-linux-gnu-g++"


def small_net(two_outputs: bool = False) -> Graph:
    """conv -> relu -> global pool -> linear (+ the softmax as a second output)."""
    init = np.random.default_rng(1)  # the same weights on every call
    g = Graph("small")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    w = g.add_param("w", init.standard_normal((4, 3, 3, 3)).astype("float32"))
    c = g.add_node("conv", [x, w], attrs=dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1)))
    r = g.add_node("relu", [c.output])
    p = g.add_node("adaptive_max_pool", [r.output], attrs=dict(output_size=(1, 1)))
    f = g.add_node("flatten", [p.output])
    fw = g.add_param("fc.w", init.standard_normal((5, 4)).astype("float32"))
    y = g.add_node("linear", [f.output, fw]).output
    if two_outputs:
        g.set_outputs([y, g.add_node("softmax", [y], attrs=dict(axis=-1)).output])
    else:
        g.set_outputs([y])
    return g


def two_input_net() -> Graph:
    g = Graph("pair")
    a = g.add_input("a", TensorType((2, 3)))
    b = g.add_input("b", TensorType((2, 3), "int32"))
    bf = g.add_node("cast", [b], attrs=dict(dtype="float32")).output
    g.set_outputs(g.add_node("mul", [a, bf]).outputs)
    return g


@pytest.fixture(scope="module")
def model():
    return compile_graph(small_net(), "x86", pipeline="fold-bn,prune-channels{ratio=0.5}")


@pytest.fixture(scope="module")
def x():
    return rng.standard_normal((1, 3, 8, 8)).astype("float32")


def expected(graph: Graph, *inputs) -> list[np.ndarray]:
    """The graph evaluated with its ops' torch references."""
    env = {n: torch.from_numpy(a) for n, a in zip(graph.inputs, inputs)}
    env.update({n: torch.tensor(p.data) for n, p in graph.params.items()})
    for node in graph.nodes:
        out = OPS[node.op].impl(*[env[v] for v in node.inputs], **node.attrs)
        env.update(zip(node.outputs, out if isinstance(out, tuple) else (out,)))
    return [env[o].numpy() for o in graph.outputs]


def test_call_numpy_and_torch(model, x):
    want = expected(small_net(), x)[0]
    y = model(x)
    assert isinstance(y, np.ndarray) and y.shape == (1, 5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    t = model(torch.from_numpy(x).requires_grad_(True))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), y)


def test_several_outputs_are_a_tuple(x):
    m = compile_graph(small_net(two_outputs=True), "x86")
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 2 and m.num_outputs == 2
    assert m.output_names == tuple(small_net(two_outputs=True).outputs)
    np.testing.assert_allclose(out[1].sum(-1), 1.0, rtol=1e-5)
    tout = m(torch.from_numpy(x))
    assert isinstance(tout, tuple) and all(isinstance(o, torch.Tensor) for o in tout)


def test_two_inputs_mixed_dtypes():
    m = compile_graph(two_input_net(), "x86")
    a, b = rng.standard_normal((2, 3)).astype("float32"), np.arange(6, dtype="int32").reshape(2, 3)
    np.testing.assert_allclose(m(a, b), a * b, rtol=1e-6)
    assert [s.name for s in m.inputs] == ["a", "b"] and m.inputs[1].dtype == "int32"


class ScalarOutputs(torch.nn.Module):
    def forward(self, x):
        return x.mean(), x.sum(dim=(0, 1)).to(torch.int64), x[0]


def test_outputs_have_the_declared_shapes_and_dtypes(tmp_path):
    """0-d outputs stay 0-d (numpy, torch, and after save/load); dtypes are the graph's."""
    x = torch.randn(2, 3)
    m = graphopt.optimize(ScalarOutputs(), example_inputs=(x,), target="x86")
    assert [(s.shape, s.dtype) for s in m.output_specs] == [((), "float32"), ((), "int64"), ((3,), "float32")]
    want = ScalarOutputs()(x)
    for got in (m(x), tuple(torch.from_numpy(o) for o in m(x.numpy())), load_compiled(m.save(tmp_path / "s.so"))(x)):
        assert [(o.shape, o.dtype) for o in got] == [(w.shape, w.dtype) for w in want]
        for o, w in zip(got, want):
            torch.testing.assert_close(o, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args,match",
    [
        ((), r"takes 1 input\(s\) \(x\), got 0"),
        ((np.zeros((1, 3, 8, 8), "float32"),) * 2, r"takes 1 input\(s\) \(x\), got 2"),
        ((np.zeros((1, 3, 8, 9), "float32"),), r"input 'x' expects float32\[1,3,8,8\], got float32\[1,3,8,9\]"),
        ((np.zeros((1, 3, 8, 8), "float64"),), r"input 'x' expects float32\[1,3,8,8\], got float64"),
        ((torch.zeros(1, 3, 8, 8, dtype=torch.float16),), r"input 'x' expects float32.*got float16"),
        (([[1.0]],), r"input 'x' must be a numpy array or torch tensor, got list"),
    ],
)
def test_wrong_inputs_are_named(model, args, match):
    with pytest.raises(BackendError, match=match):
        model(*args)


def test_save_load_round_trip(model, x, tmp_path):
    path = model.save(tmp_path / "m.so")
    meta = json.loads(metadata_path(path).read_text())
    assert path.exists() and metadata_path(path).name == "m.so.json"
    assert meta["graphopt_version"] == graphopt.__version__
    assert meta["pipeline"] == "fold-bn,prune-channels{ratio=0.5}"
    assert meta["target"]["kind"] == "llvm" and meta["host_arch"] == "x86_64"
    assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert meta["num_outputs"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.so", "m.so.json"]  # no temp files left
    loaded = load_compiled(path)
    assert isinstance(loaded, CompiledModel) and loaded.pipeline == model.pipeline
    assert loaded.inputs == model.inputs and str(loaded.target) == str(model.target)
    np.testing.assert_array_equal(loaded(x), model(x))
    # A loaded model saves again (as a copy of its library).
    again = load_compiled(loaded.save(tmp_path / "again.so"))
    np.testing.assert_array_equal(again(x), model(x))


def test_save_load_tar(model, x, tmp_path):
    loaded = load_compiled(model.save(tmp_path / "m.tar"))
    np.testing.assert_array_equal(loaded(x), model(x))


def test_save_rejects_unknown_suffix(model, tmp_path):
    with pytest.raises(BackendError, match=r"use a \.so .* or \.tar"):
        model.save(tmp_path / "m.bin")


def test_load_errors(model, tmp_path):
    with pytest.raises(BackendError, match="no metadata file .*m.so.json"):
        load_compiled(tmp_path / "m.so")
    path = model.save(tmp_path / "m.so")
    metadata_path(path).write_text("{not json")
    with pytest.raises(BackendError, match="m.so.json' is corrupt"):
        load_compiled(path)
    metadata_path(path).write_text(json.dumps({"format": 1, "target": {"kind": "llvm"}}))
    with pytest.raises(BackendError, match="is corrupt: 'inputs'"):
        load_compiled(path)
    model.save(path)
    path.unlink()
    with pytest.raises(BackendError, match="library .*m.so' .* is missing"):
        load_compiled(path)


# --- cross target (aarch64) --------------------------------------------------------------


@pytest.fixture(scope="module")
def arm_model():
    return compile_graph(small_net(), "arm")


def _elf_machine(path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


def test_cross_model_refuses_local_call(arm_model, x):
    assert arm_model.is_cross
    with pytest.raises(
        BackendError,
        match=r"compiled for aarch64, which this .* machine cannot "
        r"run \(a cross target\).*run_remote\(session",
    ):
        arm_model(x)


@pytest.mark.skipif(shutil.which(CROSS_CXX) is None, reason=f"{CROSS_CXX} not installed")
def test_cross_model_saves_aarch64_so(arm_model, x, tmp_path):
    path = arm_model.save(tmp_path / "arm.so")
    assert _elf_machine(path) == 183  # EM_AARCH64
    loaded = load_compiled(path)
    assert loaded.is_cross and json.loads(metadata_path(path).read_text())["host_arch"] == "aarch64"
    with pytest.raises(BackendError, match="cross target"):
        loaded(x)


def test_cross_model_saves_tar(arm_model, tmp_path):
    path = arm_model.save(tmp_path / "arm.tar")
    assert path.stat().st_size > 0 and load_compiled(path).is_cross


@pytest.mark.slow
def test_cross_model_runs_remotely(arm_model, x, tmp_path):
    from graphopt.backends.tvm.emulator import emulated_aarch64_server, emulator_available

    if not emulator_available() or shutil.which(CROSS_CXX) is None:
        pytest.skip("emulated aarch64 server or cross compiler not set up")
    want = expected(small_net(), x)[0]
    loaded = load_compiled(arm_model.save(tmp_path / "arm.so"))
    with emulated_aarch64_server() as emu:
        session = emu.connect()
        got = arm_model.run_remote(session, x)  # exported to a temporary .so
        got_loaded = loaded.run_remote(session, torch.from_numpy(x))  # the saved .so
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert isinstance(got_loaded, torch.Tensor)
    np.testing.assert_array_equal(got_loaded.numpy(), got)


# --- CUDA ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_model():
    return compile_graph(small_net(), "cuda")


def test_cuda_builds_here(cuda_model, tmp_path):
    assert cuda_model.device_kind == "cuda" and cuda_model.host_arch == "x86_64"
    path = cuda_model.save(tmp_path / "cuda.so")
    assert json.loads(metadata_path(path).read_text())["target"]["kind"] == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA device")
def test_cuda_runs(cuda_model, x):
    np.testing.assert_allclose(cuda_model(x), expected(small_net(), x)[0], rtol=1e-4, atol=1e-4)
    t = cuda_model(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor)


def test_cuda_without_device_says_so(cuda_model, x):
    if tvm.cuda(0).exist:
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendError, match="compiled for cuda sm_80 and this machine has no such"):
        cuda_model(x)
