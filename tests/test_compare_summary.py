"""The before/after comparison at the end of `opt`, `compile` and `graphopt.optimize`."""

from __future__ import annotations

import logging
import os

import pytest

import graphopt
from graphopt.analysis.compare import compare_graphs
from graphopt.analysis.cost import graph_cost, human_bytes, human_count
from graphopt.api import run_pipeline_on
from graphopt.cli import main
from graphopt.models import get_model

PRUNE = "fold-bn,prune-channels{ratio=0.5}"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    model, (x,) = get_model("digits_mlp", seed=3)
    graph = graphopt.trace(model, (x,))
    path = tmp_path_factory.mktemp("compare") / "mlp.onnx"
    graph.save_onnx(path)
    return model, x, graph, path


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_comparison_figures_are_cost_totals(mlp):
    _, _, graph, _ = mlp
    pruned, _ = run_pipeline_on(graph, PRUNE, verify=False)
    c = compare_graphs(graph, pruned)
    b, a = graph_cost(graph), graph_cost(pruned)
    assert c.params == (b.params, a.params) and c.macs == (b.macs, a.macs)
    assert c.weight_bytes == (b.weight_bytes, a.weight_bytes)
    assert c.nodes == (len(graph.nodes), len(pruned.nodes)) and c.changed
    assert a.macs < b.macs  # the pruning really removed work
    rows = {r[0]: r for r in c.rows()}
    assert rows["MACs"] == ("MACs", human_count(b.macs), human_count(a.macs), f"{a.macs / b.macs:.2f}x")
    assert "file" not in rows and "latency" not in rows  # not known: not shown
    timed = c.with_files(1000, 250).with_latency(2.0, 1.0)
    assert {r[0]: r[3] for r in timed.rows()}["file"] == "0.25x"
    assert {r[0]: r[3] for r in timed.rows()}["latency"] == "0.50x"
    assert timed.to_json()["latency_ms"] == (2.0, 1.0)
    assert not compare_graphs(graph, graph.copy()).changed


def test_opt_prints_the_table_on_stderr_with_file_sizes(capsys, mlp, tmp_path):
    _, _, graph, path = mlp
    out_path = tmp_path / "pruned.onnx"
    rc, out, err = cli(capsys, "opt", "-p", PRUNE, path, "-o", out_path)
    assert rc == 0, err
    table = err[err.index("before/after:") :]
    assert "before/after" not in out  # results on stdout, the comparison on stderr
    pruned = graphopt.load_onnx(out_path)
    b, a = graph_cost(graphopt.load_onnx(path)), graph_cost(pruned)
    params_row = next(line for line in table.splitlines() if line.startswith("params"))
    assert params_row.split()[1:3] == [human_count(b.params), human_count(a.params)]
    file_row = next(line for line in table.splitlines() if line.startswith("file"))
    assert file_row.split()[1:3] == [human_bytes(os.path.getsize(path)), human_bytes(os.path.getsize(out_path))]


def test_opt_quiet_or_unchanged_prints_no_table(capsys, mlp, tmp_path):
    _, _, _, path = mlp
    rc, out, err = cli(capsys, "-q", "opt", "-p", PRUNE, path)
    assert rc == 0 and err == ""  # -q silences it
    rc, out, err = cli(capsys, "opt", "-p", "eliminate-dead-code", path)  # nothing to remove in a traced MLP
    assert rc == 0 and "before/after" not in err


def test_optimize_returns_and_logs_the_comparison(mlp, caplog):
    _, x, graph, _ = mlp
    with caplog.at_level(logging.INFO, logger="graphopt"):
        compiled = graphopt.optimize(graph, target="x86", pipeline=PRUNE, verify=False)
    c = compiled.comparison
    pruned_cost = graph_cost(run_pipeline_on(graph, PRUNE, verify=False)[0])
    assert c.params == (graph_cost(graph).params, pruned_cost.params) and c.macs[1] == pruned_cost.macs
    assert compiled(x.numpy()).shape == (1, 10)
    logged = [r.getMessage() for r in caplog.records if r.name == "graphopt"]
    assert any(c.table() in m for m in logged)
    unchanged = graphopt.optimize(graph, target="x86", pipeline="", verify=False)
    assert unchanged.comparison is None


def test_compile_prints_the_table(capsys, mlp, tmp_path):
    _, _, _, path = mlp
    rc, out, err = cli(capsys, "compile", path, "-t", "x86", "-p", PRUNE, "--no-verify", "-o", tmp_path / "m.so")
    assert rc == 0, err
    assert "before/after the pipeline:" in err and "MACs" in err.split("before/after the pipeline:")[1]
    rc, out, err = cli(capsys, "-q", "compile", path, "-t", "x86", "-p", PRUNE, "--no-verify", "-o", tmp_path / "q.so")
    assert rc == 0 and "before/after" not in err
