"""The pass manager: copy on entry, instruments, and errors that name the failing pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from graphopt.errors import NumericalMismatchError, PassError
from graphopt.ir.graph import Graph, Value
from graphopt.ir.types import TensorType
from graphopt.passes import (
    IRDump,
    NumericalVerifier,
    Pass,
    PassContext,
    PassResult,
    Pipeline,
    Statistics,
    Timing,
    Tolerance,
    default_instruments,
    register_pass,
)
from graphopt.passes.registry import unregister_pass


def conv_relu() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    w = g.add_param("conv.weight", np.linspace(-1, 1, 108, dtype=np.float32).reshape(4, 3, 3, 3))
    b = g.add_param("conv.bias", np.array([0.5, -0.5, 0.0, 1.0], np.float32))
    conv = g.add_node("conv", [x, w, b], attrs=dict(stride=[1, 1], pads=[1, 1, 1, 1], dilation=[1, 1]), name="conv")
    relu = g.add_node("relu", [conv.output])
    g.set_outputs([relu.output])
    return g


# ---- throwaway passes ----------------------------------------------------------------


@dataclass(frozen=True)
class AddIdentity(Pass):
    """Exact: put an identity after the conv."""

    name: ClassVar[str] = "test-add-identity"

    def run(self, graph, ctx):
        graph.insert_on_edge("conv", "identity")
        return PassResult(graph, True, {"inserted": 1})


@dataclass(frozen=True)
class PerturbWeight(Pass):
    """Deliberately wrong: changes a weight but claims (by default) to be exact."""

    name: ClassVar[str] = "test-perturb-weight"
    delta: float = 0.1
    report_change: bool = True

    def run(self, graph, ctx):
        w = graph.param("conv.weight").data
        graph.set_param("conv.weight", w + np.float32(self.delta))
        return PassResult(graph, self.report_change)


@dataclass(frozen=True)
class LossyPerturb(PerturbWeight):
    """The same change, honestly declared as lossy."""

    name: ClassVar[str] = "test-lossy-perturb"

    def tolerance(self):
        return Tolerance.bounded(min_sqnr_db=0.0)


@dataclass(frozen=True)
class Dangle(Pass):
    """Deliberately wrong: leaves relu reading a value nothing defines."""

    name: ClassVar[str] = "test-dangle"

    def run(self, graph, ctx):
        graph._values["ghost"] = Value("ghost", graph.type_of("conv"))  # bypassing the verbs
        graph.set_input(graph.node("relu"), 0, "ghost")
        return PassResult(graph, True)


@dataclass(frozen=True)
class Crash(Pass):
    name: ClassVar[str] = "test-crash"

    def run(self, graph, ctx):
        raise RuntimeError("boom")


@dataclass(frozen=True)
class NotAResult(Pass):
    name: ClassVar[str] = "test-not-a-result"

    def run(self, graph, ctx):
        return graph


THROWAWAY = (AddIdentity, PerturbWeight, LossyPerturb, Dangle, Crash, NotAResult)


@pytest.fixture(autouse=True)
def throwaway_passes():
    for cls in THROWAWAY:
        register_pass(cls)
    yield
    for cls in THROWAWAY:
        unregister_pass(cls.name)


def run(text: str, graph: Graph | None = None, **ctx_kwargs):
    ctx = PassContext(**ctx_kwargs)
    return Pipeline.parse(text).run(graph if graph is not None else conv_relu(), ctx), ctx


# ---- copy on entry ---------------------------------------------------------------------


def test_input_graph_is_untouched():
    g = conv_relu()
    before_text, before_w = str(g), g.param("conv.weight").data.copy()
    result, _ = run("test-add-identity,test-perturb-weight", g)
    assert str(g) == before_text
    np.testing.assert_array_equal(g.param("conv.weight").data, before_w)
    assert result.graph is not g
    assert [n.op for n in result.graph.nodes] == ["conv", "identity", "relu"]
    assert not np.array_equal(result.graph.param("conv.weight").data, before_w)


def test_result_records_and_report():
    result, _ = run("test-add-identity,test-perturb-weight{delta=0.0 report_change=false}")
    assert [str(r.pass_) for r in result.records] == [
        "test-add-identity",
        "test-perturb-weight{delta=0.0 report_change=false}",
    ]
    assert [r.changed for r in result.records] == [True, False]
    assert result.changed
    lines = result.report().splitlines()
    assert lines[0].split() == ["pass", "time", "changed", "stats"]
    assert lines[1].split()[0] == "test-add-identity" and lines[1].split()[3:] == ["yes", "inserted=1"]
    assert lines[2].split()[-1] == "no"


def test_log_gets_one_line_per_pass():
    lines: list[str] = []
    run("test-add-identity,test-perturb-weight", log=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] test-add-identity: ") and "(changed) inserted=1" in lines[0]
    assert lines[1].startswith("[2/2] test-perturb-weight: ")


# ---- instruments -------------------------------------------------------------------------


def test_timing_records_every_pass():
    timing = Timing()
    run("test-add-identity,test-perturb-weight{delta=0.5}", instruments=[timing])
    assert [name for name, _ in timing.records] == ["test-add-identity", "test-perturb-weight{delta=0.5}"]
    assert all(seconds >= 0 for _, seconds in timing.records)


def test_statistics_records_stats_and_counts():
    stats = Statistics()
    run("test-add-identity", instruments=[stats])
    assert stats.records == [
        {"pass": "test-add-identity", "changed": True, "inserted": 1, "nodes": "2->3", "parameters": "112->112"}
    ]


def test_ir_dump_writes_before_and_after_each_pass(tmp_path):
    run("test-add-identity,test-perturb-weight", instruments=[IRDump(tmp_path / "ir")])
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == [
        "00-input.mlir.txt",
        "01-test-add-identity-after.mlir.txt",
        "01-test-add-identity-before.mlir.txt",
        "02-test-perturb-weight-after.mlir.txt",
        "02-test-perturb-weight-before.mlir.txt",
    ]
    after = (tmp_path / "ir" / "01-test-add-identity-after.mlir.txt").read_text()
    assert "= identity(%conv)" in after
    assert after == (tmp_path / "ir" / "02-test-perturb-weight-before.mlir.txt").read_text()
    assert (tmp_path / "ir" / "00-input.mlir.txt").read_text() == str(conv_relu()) + "\n"


def test_default_instruments():
    kinds = [type(i) for i in default_instruments(dump_dir="d")]
    assert kinds == [Statistics, NumericalVerifier, IRDump, Timing]  # timing last: it times the pass alone
    assert NumericalVerifier not in [type(i) for i in default_instruments(verify=False)]


# ---- numerical verification -------------------------------------------------------------------


def test_exact_pass_passes_the_verifier():
    verifier = NumericalVerifier()
    run("test-add-identity", instruments=[verifier])
    assert verifier.checked == ["test-add-identity"]


def test_wrong_pass_is_caught_naming_pass_options_and_predecessors():
    with pytest.raises(NumericalMismatchError) as info:
        run("test-add-identity,test-perturb-weight{delta=0.25}", instruments=default_instruments())
    msg = str(info.value)
    assert msg.startswith(
        "pass 'test-perturb-weight{delta=0.25}' changed the model's outputs "
        "beyond its tolerance (atol=1e-05 rtol=1e-05) on input set 0: output 0: "
        "max abs error "
    )
    assert msg.endswith("; passes before it: test-add-identity")
    assert isinstance(info.value, PassError)


def test_wrong_first_pass_says_it_was_first():
    with pytest.raises(NumericalMismatchError, match="it was the first pass$"):
        run("test-perturb-weight", instruments=[NumericalVerifier()])


def test_verifier_uses_given_inputs():
    verifier = NumericalVerifier()
    zeros = [np.zeros((1, 3, 8, 8), np.float32)]
    run("test-add-identity", instruments=[verifier], inputs=[zeros])
    assert len(verifier._inputs) == 1 and not verifier._inputs[0][0].any()


def test_lossy_pass_within_its_declared_bound_passes():
    verifier = NumericalVerifier()
    run("test-lossy-perturb{delta=0.01}", instruments=[verifier])
    assert verifier.checked == ["test-lossy-perturb{delta=0.01}"]


def test_pass_that_hides_a_change_is_named():
    with pytest.raises(
        PassError,
        match=r"pass 'test-perturb-weight\{report_change=false\}' changed the "
        r"graph \(parameter 'conv.weight' changed\) but reported changed=False",
    ):
        run("test-perturb-weight{report_change=false}", instruments=[NumericalVerifier()])


def test_unchanged_pass_skips_the_numeric_check():
    verifier = NumericalVerifier()
    result, _ = run("test-perturb-weight{delta=0.0}", instruments=[verifier])
    assert verifier.checked == []
    assert not result.changed  # it said "changed"; the content says otherwise


def test_no_verifier_no_numeric_check():
    result, _ = run("test-perturb-weight", instruments=default_instruments(verify=False))
    assert result.records[0].changed


# ---- structural verification and failures --------------------------------------------------------


def test_dangling_value_is_caught_naming_the_pass():
    with pytest.raises(PassError) as info:
        run("test-add-identity,test-dangle")
    msg = str(info.value)
    assert msg.startswith("pass 'test-dangle' left an invalid graph: node 'relu': input '%ghost' is dangling")
    assert msg.endswith("passes before it: test-add-identity")


def test_structural_check_can_be_turned_off():
    result, _ = run("test-dangle", verify_structure=False)
    assert result.graph.node("relu").inputs == ("ghost",)


def test_raising_pass_is_wrapped_naming_it():
    with pytest.raises(PassError) as info:
        run("test-add-identity,test-crash")
    assert str(info.value) == ("pass 'test-crash' crashed with RuntimeError: boom; passes before it: test-add-identity")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_pass_returning_a_graph_instead_of_a_result():
    with pytest.raises(PassError, match="pass 'test-not-a-result' returned Graph, not a PassResult"):
        run("test-not-a-result")


def test_model_that_cannot_run_on_check_inputs_is_one_clear_error():
    import torch

    import graphopt

    class DivByZero(torch.nn.Module):
        def forward(self, a, b):
            return a // (b * 0)

    ints = (torch.tensor([7, 8]), torch.tensor([1, 2]))
    graph = graphopt.trace(DivByZero(), ints)
    with pytest.raises(
        PassError,
        match=r"numerical verifier could not run the model before pass "
        r"'test-add-identity' on input set 0 \(RuntimeError: ZeroDivisionError",
    ):
        Pipeline.parse("test-add-identity").run(graph, PassContext(instruments=[NumericalVerifier()]))
