"""Progress bars (graphopt.progress): silent off a terminal and with -q, shown when forced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt.api import run_pipeline_on
from graphopt.cli import main
from graphopt.models import get_model
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.weight_qdq import FloatReference
from graphopt.progress import progress_bar, progress_enabled, set_progress
from graphopt.quant.calibrate import calibrate_ranges
from graphopt.train import train
from graphopt.train.qat import qat


@pytest.fixture(autouse=True)
def undecided():
    set_progress(None)
    yield
    set_progress(None)


@pytest.fixture(scope="module")
def mlp():
    model, (x,) = get_model("digits_mlp", seed=4)
    return graphopt.trace(model, (x,))


def _sets(graph, count=8):
    rng = np.random.default_rng(0)
    shape = graph.type_of(graph.inputs[0]).shape
    return [[rng.standard_normal(shape).astype(np.float32)] for _ in range(count)]


def _batches(graph, count=4):
    shape = graph.type_of(graph.inputs[0]).shape
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(shape, generator=gen), torch.randint(0, 10, (shape[0],), generator=gen)) for _ in range(count)]


def test_off_a_terminal_nothing_is_written(capsys, mlp):
    calibrate_ranges(mlp, [mlp.inputs[0]], _sets(mlp), samples=8)
    train(mlp, _batches(mlp), torch.nn.functional.cross_entropy, log=None)
    assert not progress_enabled()  # pytest's captured stderr is not a terminal: decided off
    assert capsys.readouterr().err == ""


def test_forced_bars_show_calibration_training_and_distillation(capsys, mlp):
    set_progress(True)
    calibrate_ranges(mlp, [mlp.inputs[0]], _sets(mlp), samples=8)
    err = capsys.readouterr().err
    assert "calibrate:" in err and "/8" in err and "\r" in err
    train(mlp, _batches(mlp), torch.nn.functional.cross_entropy, epochs=2, log=None)
    err = capsys.readouterr().err
    assert "train:" in err and "/8" in err  # 4 batches x 2 epochs
    train(mlp, _batches(mlp), lambda out, y, teacher: torch.nn.functional.mse_loss(out, teacher), teacher=mlp, log=None)
    assert "distill:" in capsys.readouterr().err


def test_forced_bars_show_qat_and_adaround(capsys, mlp):
    ptq, _ = run_pipeline_on(mlp, "fold-bn,quantize", verify=False, calibration=_sets(mlp))
    set_progress(True)
    qat(ptq, _batches(ptq, 2), torch.nn.functional.cross_entropy, log=None)
    assert "qat:" in capsys.readouterr().err
    ctx = PassContext(instruments=[FloatReference()], calibration=_sets(mlp))
    Pipeline.parse("fold-bn,quantize,round-adaptive{iterations=10}").run(mlp, ctx)
    err = capsys.readouterr().err
    assert "round-adaptive:" in err and "/30" in err  # three layers x 10 iterations


def test_a_disabled_bar_still_iterates():
    set_progress(False)
    assert list(progress_bar(range(3), desc="x")) == [0, 1, 2]


def test_cli_quiet_reaches_the_bars(capsys, mlp, tmp_path):
    path = tmp_path / "mlp.onnx"
    mlp.save_onnx(path)
    set_progress(True)
    assert main(["-q", "opt", "-p", "fold-bn,quantize", str(path)]) == 0
    assert not progress_enabled()
    err = capsys.readouterr().err  # only the warning that -q never hides (random calibration inputs)
    assert all(line.startswith("graphopt: warning:") for line in err.splitlines()) and "\r" not in err
    set_progress(True)
    assert main(["opt", "-p", "fold-bn,quantize", str(path)]) == 0  # no -q: a terminal decides, and this is none
    err = capsys.readouterr().err
    assert "calibrating [" in err and "calibrate:" not in err and "\r" not in err
