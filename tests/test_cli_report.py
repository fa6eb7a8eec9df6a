"""`graphopt report`: per-layer figures that agree with analysis/cost.py, measured accuracy and latency, the plot."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import graphopt
from graphopt.analysis.cost import graph_cost
from graphopt.analysis.report_plot import pareto_front
from graphopt.cli import main
from graphopt.models import evaluate_digits_model, get_model, load_digits_data, train_digits_model
from graphopt.storage import read_compressed

PRUNE_INT8 = "fold-bn,prune-magnitude{sparsity=0.75},quantize"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A digits CNN trained briefly (.onnx, .pt2) and its pruned + int8 variant (.gopt)."""
    root = tmp_path_factory.mktemp("report")
    model, (x,) = get_model("digits_cnn", batch_size=1, seed=0)
    data = load_digits_data(seed=0)
    train_digits_model(model, epochs=2, seed=0, data=data)
    graph = graphopt.trace(model, (x,))
    onnx_path = graph.save_onnx(root / "cnn.onnx")
    pt2_path = root / "cnn.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(pt2_path))
    gopt_path = root / "pruned_int8.gopt"
    assert main(["-q", "save", "-p", PRUNE_INT8, str(onnx_path), "-o", str(gopt_path)]) == 0
    return {"model": model, "data": data, "onnx": onnx_path, "pt2": pt2_path, "gopt": gopt_path, "root": root}


def report_json(capsys, *argv):
    rc = main(["report", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)["models"], err


def test_layers_and_totals_are_the_cost_figures(capsys, models):
    (r,), _ = report_json(capsys, models["onnx"])
    graph = graphopt.load_onnx(models["onnx"])
    cost = graph_cost(graph)
    assert (r["params"], r["macs"], r["weight_bytes"]) == (cost.params, cost.macs, cost.weight_bytes)
    assert r["file_bytes"] == os.path.getsize(models["onnx"]) and r["format"] == "onnx"
    convs = [layer for layer in r["layers"] if layer["op"] in ("conv", "linear")]
    assert len(convs) == 4
    for layer in r["layers"]:
        node = cost.node(layer["name"])
        assert (layer["params"], layer["macs"], layer["weight_bytes"]) == (node.params, node.macs, node.weight_bytes)
        assert layer["weight_dtype"] == "float32" and layer["weight_bits"] == 32.0
    assert sum(layer["params"] for layer in r["layers"]) + r["other"]["params"] == cost.params


def test_gopt_reports_disk_bytes_int8_and_sparsity(capsys, models):
    (r,), _ = report_json(capsys, models["gopt"])
    graph, info = read_compressed(models["gopt"])
    cost = graph_cost(graph)
    assert r["format"] == "gopt" and r["file_bytes"] == info.total_bytes == os.path.getsize(models["gopt"])
    assert r["disk_param_bytes"] == info.param_bytes and r["macs"] == cost.macs and r["params"] == cost.params
    disk = {p.name: p.nbytes for p in info.params}
    for layer in r["layers"]:  # a quantized conv: its int8 weight and int32 bias come through dequantize nodes
        assert layer["weight_dtype"] == "int8" and layer["activation_dtype"] == "int8" and layer["weight_bits"] == 8.0
        assert layer["sparsity"] == pytest.approx(0.75, abs=0.01)
        assert layer["macs"] == cost.node(layer["name"]).macs
        dq = [cost.node(n) for n in layer["nodes"][1:]]
        assert layer["params"] == sum(c.params for c in dq)
        assert layer["disk_bytes"] == sum(disk[p] for c in dq for p in c.param_names)
    assert sum(layer["params"] for layer in r["layers"]) + r["other"]["params"] == cost.params


def test_accuracy_on_digits_matches_the_torch_model(capsys, models):
    reports, _ = report_json(capsys, models["onnx"], "--compare", models["pt2"], "--accuracy", "digits")
    expected = evaluate_digits_model(models["model"], models["data"])
    assert expected > 0.5  # trained: the check below can tell a right answer from chance
    for r in reports:
        assert r["accuracy"]["samples"] == 450
        assert abs(r["accuracy"]["top1"] - expected) <= 1 / 450
    assert reports[1]["format"] == "pt2"


def test_accuracy_on_a_model_digits_does_not_fit_says_so(capsys, tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    path = graphopt.trace(net, (torch.randn(1, 3, 4, 4),)).save_onnx(tmp_path / "rgb.onnx")
    (r,), err = report_json(capsys, path, "--accuracy", "digits")
    assert r["accuracy"] is None
    assert "does not fit" in err and "float32[1, 3, 4, 4]" in err and "[N, 1, 8, 8]" in err
    assert any("does not fit" in note for note in r["notes"])


def test_sensitivity_and_text_output(capsys, models):
    rc = main(["report", str(models["onnx"]), "--sensitivity"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "int8 SQNR" in out and "int8 SQNR with every layer quantized" in out
    (r,), _ = report_json(capsys, models["onnx"], "--sensitivity")
    sqnr = {layer["name"]: layer["int8_sqnr_db"] for layer in r["layers"] if layer["op"] in ("conv", "linear")}
    assert len(sqnr) == 4 and all(np.isfinite(v) and v > 10 for v in sqnr.values())
    assert r["sensitivity"]["all_layers_db"] < max(sqnr.values())  # all layers at once lose more than the best one


def test_latency_is_measured_with_tvm(capsys, tmp_path):
    model, (x,) = get_model("digits_mlp", seed=1)
    path = graphopt.trace(model, (x,)).save_onnx(tmp_path / "mlp.onnx")
    (r,), _ = report_json(capsys, path, "--latency", "--target", "x86")
    lat = r["latency"]
    assert lat["target"] == "x86" and lat["runs"] >= 10 and 0 < lat["min_ms"] <= lat["median_ms"]
    assert lat["load_avg_1m"] >= 0


def test_plot_writes_a_png_with_the_pareto_front(capsys, models, tmp_path):
    import matplotlib.image

    png = tmp_path / "tradeoff.png"
    rc = main(["-q", "report", str(models["onnx"]), "--compare", str(models["gopt"]), "--accuracy", "digits",
               "--plot", str(png)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in out
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # something was drawn


def test_pareto_front():
    points = [(100, 0.95), (10, 0.90), (50, 0.80), (10, 0.85), (5, 0.50)]
    assert pareto_front(points, maximize_y=True) == [0, 1, 4]
    assert pareto_front([(1, 2.0), (2, 1.0), (3, 3.0)], maximize_y=False) == [0, 1]


def test_bad_options_fail_before_any_work(capsys, models):
    assert main(["report", str(models["onnx"]), "--target", "x86"]) == 1
    assert "--target is the target of --latency" in capsys.readouterr().err
    assert main(["report", str(models["root"] / "missing.onnx")]) == 1
    assert "missing.onnx" in capsys.readouterr().err
