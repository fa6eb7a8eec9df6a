"""`-p @FILE`: a pipeline written in a file, over several lines with '#' comments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphopt
from graphopt.cli import main
from graphopt.cli_commands.pipeline_arg import parse_pipeline_argument, pipeline_argument_text
from graphopt.errors import GraphoptError
from graphopt.passes import Pipeline

PIPELINE_FILE = """# cleanups, then 50% magnitude pruning
fold-bn,
  eliminate-dead-code,

prune-magnitude{sparsity=0.5
                pattern=unstructured}
"""


def test_file_reads_as_the_same_pipeline_as_its_text(tmp_path):
    path = tmp_path / "p.pipeline"
    path.write_text(PIPELINE_FILE)
    assert parse_pipeline_argument(f"@{path}") == Pipeline.parse(
        "fold-bn,eliminate-dead-code,prune-magnitude{sparsity=0.5}"
    )
    assert pipeline_argument_text("fold-bn") == "fold-bn" and pipeline_argument_text(None) is None


def test_opt_runs_a_pipeline_file(tmp_path, capsys):
    layers = [nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)]
    model = nn.Sequential(*layers).eval()
    onnx_path = graphopt.trace(model, (torch.randn(1, 3, 8, 8),)).save_onnx(tmp_path / "m.onnx")
    (tmp_path / "p.pipeline").write_text(PIPELINE_FILE)
    out = tmp_path / "m.opt.onnx"
    assert main(["-q", "opt", "-p", f"@{tmp_path / 'p.pipeline'}", str(onnx_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "prune-magnitude" in printed and "batch_norm" in printed
    pruned = graphopt.load_onnx(out)
    assert "batch_norm" not in pruned.op_counts()
    weights = [p.data for p in pruned.params.values() if p.data.ndim >= 2]
    assert weights and all(abs((w == 0).mean() - 0.5) < 0.05 for w in weights)


@pytest.mark.parametrize(
    "content, message",
    [
        ("# nothing\n\n", "holds no passes"),
        ("fold-bn,\nfold-bm\n", "in pipeline file"),
    ],
)
def test_bad_pipeline_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.pipeline"
    path.write_text(content)
    with pytest.raises(GraphoptError, match=message) as e:
        parse_pipeline_argument(f"@{path}")
    assert str(path) in str(e.value)


def test_missing_pipeline_file_fails_before_loading_the_model(tmp_path, capsys):
    rc = main(["opt", "-p", f"@{tmp_path / 'absent.pipeline'}", str(tmp_path / "absent.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and "absent.pipeline" in err and "absent.onnx" not in err
