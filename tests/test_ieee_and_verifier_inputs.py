"""Issue 17 regressions: IEEE-safe arithmetic end to end, and verifier inputs from the model's domain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import graphopt
from graphopt.analysis.inputs import MAX_ELEMENTS, sample_inputs
from graphopt.api import import_model, run_pipeline_on
from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes.base import Tolerance, sqnr_db

SPECIAL = [math.inf, -math.inf, math.nan, 1.0, -0.0, 0.0, -2.0]


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def assert_same_ieee(got, want):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(got, want)  # NaN equals NaN here
    keep = ~np.isnan(want)  # IEEE leaves a NaN's sign unspecified; a zero's is not
    np.testing.assert_array_equal(np.signbit(got[keep]), np.signbit(want[keep]))


# ---- item 1: x * 0.0 and the other neutral constants --------------------------------------

IEEE_CASES = {
    "x*0": (lambda x: x * 0.0, SPECIAL),
    "reciprocal(x*0)": (lambda x: torch.reciprocal(x * 0.0), [-1.0, 2.0, -3.0]),
    "x+0.0": (lambda x: torch.neg(x + 0.0), SPECIAL),  # neg: the output must stay a node
    "x-(-0.0)": (lambda x: torch.neg(x - (-0.0)), SPECIAL),
    "x+(-0.0)": (lambda x: torch.neg(x + (-0.0)), SPECIAL),
    "0.0-x": (lambda x: torch.neg(0.0 - x), SPECIAL),
    "x/0.0": (lambda x: x / 0.0, SPECIAL),
    "x*1,x/1,x-0": (lambda x: torch.neg((x * 1.0) / 1.0 - 0.0), SPECIAL),
}


@pytest.mark.parametrize("case", IEEE_CASES)
def test_neutral_arithmetic_keeps_ieee_through_default_pipeline(case):
    fn, values = IEEE_CASES[case]
    x = torch.tensor(values)
    graph, _ = run_pipeline_on(import_model(Fn(fn), (x,)), None, example_inputs=(x,))
    assert_same_ieee(graph.run([x.numpy()])[0], fn(x).numpy())


@pytest.mark.parametrize("case", IEEE_CASES)
def test_neutral_arithmetic_keeps_ieee_compiled_for_x86(case):
    pytest.importorskip("tvm")
    fn, values = IEEE_CASES[case]
    x = torch.tensor(values)
    compiled = graphopt.optimize(Fn(fn), example_inputs=(x,), target="x86")
    assert_same_ieee(compiled(x), fn(x).numpy())


def test_fold_constants_drops_only_the_exact_zero_rules():
    x = torch.tensor(SPECIAL)
    graph, _ = run_pipeline_on(
        import_model(Fn(lambda x: torch.neg(x + 0.0) + torch.neg(x + (-0.0))), (x,)),
        "fold-constants",
        example_inputs=(x,),
    )
    assert sorted(n.op for n in graph.nodes) == ["add", "add", "neg", "neg"]  # x + (-0.0) went


# ---- item 5: the verifier's comparison and inputs ---------------------------------------------


def test_tolerance_counts_matching_nan_and_inf_as_equal():
    a = np.array([[math.inf, math.nan, 1.0, -math.inf]], np.float32)
    assert Tolerance.exact().violations([a], [a.copy()]) == []
    bounded = Tolerance.bounded(min_sqnr_db=40, min_top1_agreement=1.0)
    assert bounded.violations([a], [a.copy()]) == []
    assert sqnr_db(a, a) == math.inf


@pytest.mark.parametrize(
    "after",
    [
        [math.inf, 0.0, 1.0, -math.inf],  # NaN lost
        [-math.inf, math.nan, 1.0, -math.inf],  # inf changed sign
        [math.inf, math.nan, 1.0, 5.0],
    ],
)  # inf became finite
def test_tolerance_reports_non_finite_mismatches(after):
    a = np.array([math.inf, math.nan, 1.0, -math.inf])
    b = np.array(after)
    (exact,) = Tolerance.exact().violations([a], [b])
    assert "values differ" in exact
    assert sqnr_db(a, b) == -math.inf
    assert Tolerance.bounded(min_sqnr_db=10).violations([a], [b])


def test_integer_floor_division_model_verifies_without_dividing_by_zero():
    a, b = torch.tensor([7, -7, 3]), torch.tensor([2, 3, -2])
    fn = lambda a, b: (  # noqa: E731
        a // b,
        torch.remainder(a, b),
        torch.div(a, b, rounding_mode="trunc"),
        torch.fmod(a, b),
        a / b,
    )
    graph = import_model(Fn(fn), (a, b))
    xs = sample_inputs(graph)
    assert xs[0].min() >= 0 and xs[1].min() >= 1  # the divisor only is kept away from 0
    out, _ = run_pipeline_on(graph, None)  # the verifier draws its own inputs: no ZeroDivisionError
    for got, want in zip(out.run(xs), fn(*map(torch.from_numpy, xs))):
        np.testing.assert_array_equal(got, want.numpy())


def test_float_input_of_log_sqrt_rsqrt_is_positive():
    x, y = torch.ones(64), torch.ones(64)
    graph = import_model(Fn(lambda x, y: (torch.log(x) + torch.sqrt(x) + torch.rsqrt(x), y)), (x, y))
    xs = sample_inputs(graph)
    assert xs[0].min() > 0 and xs[1].min() < 0  # y feeds nothing partial: standard normal
    assert all(np.isfinite(v).all() for v in graph.run(xs))


def test_huge_input_shape_is_refused_by_name():
    g = Graph("huge")
    x = g.add_input("tokens", TensorType((2**40,)))
    g.set_outputs([g.add_node("neg", [x], name="y").output])
    with pytest.raises(GraphoptError, match=rf"'tokens'.*\[{2**40}\].*limit {MAX_ELEMENTS}"):
        sample_inputs(g)
    with pytest.raises(GraphoptError, match="'tokens'.*too large"):  # the verifier's inputs, not MemoryError
        run_pipeline_on(g, None)


# ---- item 9: out-of-range embedding indices ------------------------------------------------


def test_embedding_out_of_range_raises_in_torch_and_clamps_when_compiled():
    pytest.importorskip("tvm")
    table = torch.nn.Embedding(4, 3)
    ids = torch.tensor([0, 3, 1, 2])
    compiled = graphopt.optimize(table, example_inputs=(ids,), target="x86")
    bad = torch.tensor([10, -1, 10**9, 2])
    with pytest.raises(IndexError):
        table(bad)
    rows = table.weight.detach().numpy()[[3, 0, 3, 2]]  # documented: clamped into [0, 4)
    np.testing.assert_array_equal(np.asarray(compiled(bad)), rows)
    assert "clamps" in graphopt.ir.ops.get_op("embedding").doc
