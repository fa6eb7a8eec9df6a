"""mixed-precision: per-layer weight precision from measured sensitivity, meeting a budget at the fewest bytes."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graph_support import _import
from torch import nn

from graphopt.analysis.params import count_params
from graphopt.errors import PassError, PipelineParseError
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.passes.base import sqnr_db
from graphopt.passes.mixed_precision import METADATA_KEY, MixedPrecision

X = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
CALIB = [[np.random.default_rng(i + 1).standard_normal(X.shape).astype(np.float32)] for i in range(3)]


def mlp() -> nn.Module:
    """Three linears; the middle one's rows each hold one outlier, so its 4-bit grid is coarse everywhere."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    with torch.no_grad():
        m[2].weight[:, 0] = 2.0
    return m


def run(graph, text, **ctx_args):
    before = str(graph)
    lines = []
    ctx = PassContext(instruments=default_instruments(), inputs=[[X]], calibration=CALIB, log=lines.append, **ctx_args)
    out = Pipeline.parse(text).run(graph, ctx)
    assert str(graph) == before  # the input graph is untouched
    out.graph.verify()
    return out, lines


def calib_sqnr(a, b) -> float:
    ref = np.concatenate([a.run(x)[0].ravel() for x in CALIB])
    return sqnr_db(ref, np.concatenate([b.run(x)[0].ravel() for x in CALIB]))


def weight_bytes(graph) -> int:
    return sum(p.nbytes for p in count_params(graph).params if "bias" not in p.name)


def all_plans(graph, ladder):
    """{plan: (weight bytes, output SQNR)} for every assignment of `ladder` to the three layers (brute force)."""
    mp = MixedPrecision(candidates=ladder)
    layers = mp._layers(graph)
    found = {}
    for combo in itertools.product(ladder, repeat=len(layers)):
        work = graph.copy()
        mp._apply(work, layers, {la.param: p for la, p in zip(layers, combo)})
        found[combo] = (sum(la.bytes[p] for la, p in zip(layers, combo)), calib_sqnr(graph, work))
    return found


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_sqnr_budget_met_by_a_plan_close_to_the_smallest(frontend):
    graph = _import(frontend, mlp(), (torch.from_numpy(X),))
    out, lines = run(graph, "mixed-precision{budget-sqnr=20}")
    g, stats = out.graph, out.records[0].stats
    plan = [r["precision"] for r in stats["plan"]]  # the three linears in graph order
    assert len(plan) == 3 and stats["reached"] >= 20
    assert calib_sqnr(graph, g) == pytest.approx(stats["reached"], abs=0.01)  # what is stored is what runs
    assert plan[1] != "int4"  # the outlier layer cannot stay 4-bit
    assert "int4" in plan  # and not every layer is widened
    # the greedy plan is within 25 % of the smallest plan that meets the budget (brute force over 27 plans)
    best = min(b for b, db in all_plans(graph, ("int4", "int8", "fp16")).values() if db >= 20)
    assert stats["weight_bytes"][1] <= 1.25 * best
    assert weight_bytes(g) == stats["weight_bytes"][1] < stats["weight_bytes"][0] == weight_bytes(graph)
    meta = g.metadata[METADATA_KEY]
    assert meta["budget"] == "output SQNR >= 20 dB" and meta["plan"] == stats["plan"] and meta["reached"] >= 20
    mine = [line for line in lines if line.startswith("mixed-precision: ")]
    assert len(mine) == 4 and "reached" in mine[-1], lines  # one line per layer, then the total
    assert not Pipeline.parse("mixed-precision{budget-sqnr=20}").run(g).changed  # a second run changes nothing


def test_low_budget_gives_all_int4_and_high_budget_widens():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    low, _ = run(graph, "mixed-precision{budget-sqnr=1}")
    assert low.records[0].stats["layers"] == {"int4": 3, "int8": 0, "fp16": 0}
    high, _ = run(graph, "mixed-precision{budget-sqnr=60 candidates=[int8,fp16]}")
    assert high.records[0].stats["layers"]["fp16"] >= 1
    assert high.records[0].stats["reached"] >= 60
    assert low.records[0].stats["weight_bytes"][1] < high.records[0].stats["weight_bytes"][1]


def test_fp16_layers_are_half_parameters_cast_to_float_and_run_in_onnxruntime():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    g = run(graph, "mixed-precision{budget-sqnr=60 candidates=[int8,fp16,fp32]}")[0].graph
    casts = [n for n in g.nodes if n.op == "cast"]
    assert casts and all(g.param(n.inputs[0]).data.dtype == np.float16 for n in casts)
    sess = ort.InferenceSession(g.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(got, g.run([X])[0], rtol=1e-5, atol=1e-5)


def test_budget_no_plan_meets_states_the_best_reachable():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    every_int8 = calib_sqnr(graph, Pipeline.parse("quantize-weights{bits=8 scales=per-channel}").run(graph).graph)
    message = r"no plan meets the budget output SQNR >= 90 dB: the best reachable is (\S+)"
    with pytest.raises(PassError, match=message) as e:
        run(graph, "mixed-precision{budget-sqnr=90 candidates=[int4,int8]}")
    reachable = float(str(e.value).split("best reachable is ")[1].split()[0])
    assert reachable == pytest.approx(every_int8, abs=0.01) and "every layer at int8" in str(e.value)


def test_accuracy_budget_reads_the_evaluation_from_the_context_or_refuses():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    with pytest.raises(PassError, match=r"budget-accuracy needs an evaluation set: give PassContext\(evaluation="):
        run(graph, "mixed-precision{budget-accuracy=0.9}")
    labels = [graph.run(x)[0].argmax(1) for x in CALIB]  # the float model's classes as labels

    def agreement(g) -> float:
        return float(np.mean([np.mean(g.run(x)[0].argmax(1) == y) for x, y in zip(CALIB, labels)]))

    out, _ = run(graph, "mixed-precision{budget-accuracy=0.99}", evaluation=agreement)
    stats = out.records[0].stats
    assert agreement(out.graph) == stats["reached"] >= 0.99
    assert out.graph.metadata[METADATA_KEY]["budget"] == "evaluation >= 0.99"


def test_options():
    for text, message in [
        ("mixed-precision{budget-sqnr=20 budget-accuracy=0.9}", "not both"),
        ("mixed-precision{candidates=[int2,int8]}", r"candidates \['int2', 'int8'\]: give distinct ones of"),
        ("mixed-precision{candidates=[int8,int8]}", "give distinct ones"),
        ("mixed-precision{group=0}", "group must be at least 1"),
    ]:
        with pytest.raises(PipelineParseError, match=message):
            Pipeline.parse(text)
    p = Pipeline.parse("mixed-precision{budget-accuracy=0.97 candidates=[int4,fp16] group=64}")
    assert Pipeline.parse(str(p)) == p
    assert MixedPrecision().budget == "output SQNR >= 30 dB"  # the default budget


def test_skip_keeps_a_layer_out_of_the_plan_and_unknown_names_are_refused():
    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    out, _ = run(graph, "mixed-precision{budget-sqnr=1 skip=[linear_1]}")
    assert [r["node"] for r in out.records[0].stats["plan"]] == ["linear", "linear_2"]
    assert out.graph.param("2.weight").data.dtype == np.float32  # linear_1's weight stays float
    with pytest.raises(PassError, match=r"mixed-precision: skip names \['nope'\], which are not nodes"):
        run(graph, "mixed-precision{skip=[nope]}")


def test_adaround_refines_the_int4_layers_of_a_plan_in_one_pipeline():
    from graphopt.passes.weight_qdq import FloatReference

    graph = _import("fx", mlp(), (torch.from_numpy(X),))
    ctx = PassContext(instruments=[FloatReference()], calibration=CALIB)
    plain = Pipeline.parse("mixed-precision{budget-sqnr=20}").run(graph, PassContext(calibration=CALIB)).graph
    out = Pipeline.parse("mixed-precision{budget-sqnr=20},round-adaptive{iterations=50}").run(graph, ctx)
    assert out.records[1].stats["layers"] == 3  # every quantized layer of the plan, int4 and int8
    assert calib_sqnr(graph, out.graph) > calib_sqnr(graph, plain)
