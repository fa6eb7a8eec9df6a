"""Issue 12, item 7: `graphopt reduce` shrinks a model to a minimal graph a pipeline still fails on.

Two passes broken on purpose are registered for this file only: one crashes when a
sigmoid reads a linear's output, one rewrites tanh into relu (a wrong result). On a
27-node model the reducer must end at the few nodes around the culprit, keep the
failure's kind, and write a model that fails the same way when loaded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import graphopt
from graphopt.cli import main
from graphopt.ir.graph import Graph
from graphopt.ir.ops import OPAQUE
from graphopt.ir.types import TensorType
from graphopt.passes import Pass, PassResult, Pipeline, register_pass
from graphopt.passes.registry import unregister_pass
from graphopt.tools.reduce import ReduceError, find_failure, reduce_model
from graphopt.tools.subgraph import extract


@register_pass
@dataclass(frozen=True)
class CrashOnLinearSigmoid(Pass):
    """Broken on purpose: raises IndexError when a sigmoid reads a linear's output."""

    name: ClassVar[str] = "test-crash-on-linear-sigmoid"

    def run(self, graph, ctx):
        for n in graph.nodes:
            producer = graph.producer(n.inputs[0]) if n.op == "sigmoid" else None
            if producer is not None and producer.op == "linear":
                raise IndexError(f"cannot handle {producer.name} -> {n.name}")
        return PassResult(graph, False, {})


@register_pass
@dataclass(frozen=True)
class TanhToRelu(Pass):
    """Broken on purpose: rewrites every tanh into a relu."""

    name: ClassVar[str] = "test-tanh-to-relu"

    def run(self, graph, ctx):
        tanhs = [n for n in graph.nodes if n.op == "tanh"]
        for n in tanhs:
            graph.rewrite_node(n, "relu", n.inputs)
        return PassResult(graph, bool(tanhs), {"rewritten": len(tanhs)})


@register_pass
@dataclass(frozen=True)
class OpaqueSigmoid(Pass):
    """Broken on purpose: turns every sigmoid into an ONNX op of a made-up domain, which no backend lowers."""

    name: ClassVar[str] = "test-opaque-sigmoid"

    def run(self, graph, ctx):
        sigmoids = [n for n in graph.nodes if n.op == "sigmoid"]
        attrs = {"framework": "onnx", "op_type": "Frobnicate", "domain": "com.example", "onnx_attrs": {}}
        for n in sigmoids:
            graph.rewrite_node(n, OPAQUE, n.inputs, attrs)
        return PassResult(graph, bool(sigmoids), {})


@pytest.fixture(scope="module", autouse=True)
def _unregister():
    yield
    for p in (CrashOnLinearSigmoid, TanhToRelu, OpaqueSigmoid):
        unregister_pass(p.name)


class Blocks(nn.Module):
    """Six residual blocks (linear -> act -> linear, + skip, relu); block 3 uses sigmoid, block 4 tanh."""

    ACTS = (torch.relu, torch.relu, torch.nn.functional.gelu, torch.sigmoid, torch.tanh, torch.relu)

    def __init__(self, width=8):
        super().__init__()
        self.a = nn.ModuleList(nn.Linear(width, width) for _ in self.ACTS)
        self.b = nn.ModuleList(nn.Linear(width, width) for _ in self.ACTS)

    def forward(self, x):
        for act, a, b in zip(self.ACTS, self.a, self.b):
            x = torch.relu(x + b(act(a(x))))
        return x


@pytest.fixture(scope="module")
def model_graph():
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    graph = graphopt.trace(Blocks().eval(), (x,))
    assert len(graph.nodes) >= 20
    return graph


@pytest.fixture(scope="module")
def model_file(model_graph, tmp_path_factory):
    path = tmp_path_factory.mktemp("reduce") / "blocks.onnx"
    model_graph.save_onnx(path)
    return path


def ops(graph):
    return sorted(n.op for n in graph.nodes)


def test_extract_cuts_at_intermediate_values(model_graph):
    names = [n.name for n in model_graph.nodes]
    sub = extract(model_graph, names[3:6])
    assert [n.name for n in sub.nodes] == names[3:6]
    assert set(sub.inputs).isdisjoint(model_graph.params) and sub.inputs and sub.outputs
    sub.verify()
    assert len(model_graph.nodes) == len(names)  # the model it came from is untouched


def test_crash_reduces_to_the_culprit_pair_with_the_same_kind(model_graph):
    text = str(model_graph)
    result = reduce_model(model_graph, "eliminate-dead-code,test-crash-on-linear-sigmoid", mode="crash")
    assert str(model_graph) == text
    assert result.nodes_before == len(model_graph.nodes) and result.nodes_before >= 20
    assert ops(result.graph) == ["linear", "sigmoid"], result.summary()
    assert (
        result.failure.kind
        == result.original_failure.kind
        == (
            "PassError",
            "test-crash-on-linear-sigmoid",
            "IndexError",
        )
    )
    assert "IndexError" in result.failure.message


def test_mismatch_reduces_to_the_tanh(model_graph):
    result = reduce_model(model_graph, "test-tanh-to-relu", mode="mismatch")
    assert ops(result.graph) == ["tanh"], result.summary()
    assert result.failure.kind == ("mismatch",) and "differs by max abs" in result.failure.message
    # the same pipeline does not crash, so crash mode has nothing to reduce
    with pytest.raises(ReduceError, match=r"pipeline 'test-tanh-to-relu' does not raise .*try --mode mismatch"):
        reduce_model(model_graph, "test-tanh-to-relu", mode="crash")


@pytest.mark.parametrize(
    "got, differs",
    [
        ([1.0, np.nan, np.inf], False),  # NaN matches NaN, inf the same inf
        ([1.0, np.nan, -np.inf], True),
        ([1.0, 0.0, np.inf], True),  # a NaN lost
        ([1.00005, np.nan, np.inf], False),  # within atol + rtol * max|finite|
        ([1.01, np.nan, np.inf], True),
    ],
)
def test_mismatch_judges_nan_inf_and_tolerance(got, differs):
    from graphopt.tools.reduce import _mismatch

    want = [np.array([1.0, np.nan, np.inf], np.float32)]
    assert (_mismatch(["y"], want, [np.array(got, np.float32)], 1e-4, 1e-4) is not None) == differs


def test_cli_writes_a_minimal_model_that_still_fails(model_file, tmp_path, capsys):
    out = tmp_path / "min.onnx"
    rc = main(["--quiet", "reduce", str(model_file), "-p", "test-crash-on-linear-sigmoid", "-o", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    graph = graphopt.load_onnx(out)
    assert ops(graph) == ["linear", "sigmoid"]
    before = len(graphopt.load_onnx(model_file).nodes)
    assert f"nodes: {before} -> 2 " in stdout and "IndexError" in stdout and f"wrote {out}" in stdout
    failure = find_failure(graph, Pipeline.parse("test-crash-on-linear-sigmoid"))
    assert failure is not None and failure.kind[1:] == ("test-crash-on-linear-sigmoid", "IndexError")
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_cli_mismatch_mode(model_file, tmp_path, capsys):
    out = tmp_path / "min.onnx"
    argv = ["--quiet", "reduce", str(model_file), "-p", "test-tanh-to-relu", "--mode", "mismatch", "-o", str(out)]
    assert main(argv) == 0
    assert "mismatch: output" in capsys.readouterr().out
    graph = graphopt.load_onnx(out)
    assert ops(graph) == ["tanh"]
    x = [np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)]
    np.testing.assert_allclose(graph.run(x)[0], np.tanh(x[0]), atol=1e-6)


def test_cli_pipeline_that_does_not_fail_is_an_error_and_writes_nothing(model_file, tmp_path, capsys):
    out = tmp_path / "min.onnx"
    rc = main(["--quiet", "reduce", str(model_file), "-p", "eliminate-dead-code", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "pipeline 'eliminate-dead-code' does not raise on graph" in err and "nothing to reduce" in err
    assert not out.exists()


def test_cli_bad_pipeline_fails_before_loading(tmp_path, capsys):
    rc = main(["--quiet", "reduce", str(tmp_path / "missing.onnx"), "-p", "no-such-pass", "-o", str(tmp_path / "o")])
    assert rc == 1 and "no-such-pass" in capsys.readouterr().err


@pytest.mark.slow
def test_build_crash_for_x86_reduces_to_the_node_that_cannot_be_lowered():
    pytest.importorskip("tvm")
    graph = Graph("chain")
    value = graph.add_input("x", TensorType((2, 8), "float32"))
    for op in ("relu", "tanh", "sigmoid", "relu", "tanh", "relu"):
        value = graph.add_node(op, [value]).output
    graph.set_outputs([value])
    assert find_failure(graph, Pipeline.parse("test-opaque-sigmoid")) is None  # the pipeline alone is fine
    result = reduce_model(graph, "test-opaque-sigmoid", mode="crash", target="x86")
    assert ops(result.graph) == ["sigmoid"], result.summary()
    assert result.failure.kind[0] == "BackendError" and "cannot be lowered" in result.failure.message
