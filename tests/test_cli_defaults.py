"""`graphopt opt` without -p runs the default cleanup pipeline; `-p default` names it everywhere."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from graphopt.api import run_pipeline_on
from graphopt.backends.onnxruntime import run_onnx
from graphopt.cli import main
from graphopt.defaults import DEFAULT_PIPELINE, pipeline_text
from graphopt.frontends.onnx import load_onnx
from graphopt.passes import Pipeline


def _bn_onnx(path) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, do_constant_folding=False, input_names=["x"])
    with torch.no_grad():
        return x.numpy(), model(x).numpy()


def _ops(path) -> dict[str, int]:
    return load_onnx(path).op_counts()


def test_pipeline_text_names_the_default():
    assert pipeline_text(None) == DEFAULT_PIPELINE
    assert pipeline_text("default") == DEFAULT_PIPELINE
    assert pipeline_text(" default ") == DEFAULT_PIPELINE
    assert pipeline_text("") == ""
    assert pipeline_text("fold-bn") == "fold-bn"


def test_opt_without_p_runs_the_default_pipeline(capsys, tmp_path):
    src = tmp_path / "in.onnx"
    x, expected = _bn_onnx(src)
    assert _ops(src).get("batch_norm") == 1
    assert main(["-q", "opt", str(src), "-o", str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    for name in ("fold-bn", "fold-constants", "eliminate-dead-code"):
        assert name in out  # the report lists every pass of the default pipeline
    assert len(out.split("\n\n")[0].splitlines()) == 1 + len(Pipeline.parse(DEFAULT_PIPELINE))
    assert "batch_norm" not in _ops(tmp_path / "out.onnx")
    (y,) = run_onnx(tmp_path / "out.onnx", [x])
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


def test_p_default_is_the_same_as_no_p(capsys, tmp_path):
    src = tmp_path / "in.onnx"
    _bn_onnx(src)
    assert main(["-q", "opt", str(src), "-p", "default", "-o", str(tmp_path / "a.onnx")]) == 0
    assert main(["-q", "opt", str(src), "-o", str(tmp_path / "b.onnx")]) == 0
    capsys.readouterr()
    assert load_onnx(tmp_path / "a.onnx").op_counts() == load_onnx(tmp_path / "b.onnx").op_counts()
    assert main(["-q", "save", str(src), "-p", "default", "-o", str(tmp_path / "c.gopt")]) == 0
    assert "fold-bn" in capsys.readouterr().out


def test_api_accepts_default_by_name(tmp_path):
    src = tmp_path / "in.onnx"
    _bn_onnx(src)
    graph = load_onnx(src)
    named, pipe = run_pipeline_on(graph, "default", verify=False)
    implicit, _ = run_pipeline_on(graph, None, verify=False)
    assert str(pipe) == str(Pipeline.parse(DEFAULT_PIPELINE))
    assert named.op_counts() == implicit.op_counts()
    assert "batch_norm" not in named.op_counts()


def test_empty_pipeline_still_means_no_passes(capsys, tmp_path):
    src = tmp_path / "in.onnx"
    _bn_onnx(src)
    assert main(["-q", "opt", str(src), "-p", "", "-o", str(tmp_path / "out.onnx")]) == 0
    capsys.readouterr()
    assert _ops(tmp_path / "out.onnx").get("batch_norm") == 1
