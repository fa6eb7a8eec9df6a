"""Torch files given to the CLI: a one-line hint for checkpoints, .pt2 (torch.export) programs import."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.cli import main
from graphopt.frontends.onnx import load_onnx


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)).eval(), torch.randn(1, 5)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "weights.bin"])
def test_torch_checkpoint_gets_a_one_line_hint(capsys, tmp_path, name):
    model, _ = _model()
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "DecodeError" not in err
    assert f"'{path}' is not an ONNX file" in err and "torch.onnx.export" in err and "save_onnx" in err


def test_zip_file_under_an_onnx_name_gets_the_hint(capsys, tmp_path):
    model, _ = _model()
    path = tmp_path / "model.onnx"
    torch.save(model, path)  # a whole pickled module, misnamed
    assert main(["opt", str(path)]) == 1
    assert "is not an ONNX file" in capsys.readouterr().err


def test_pt2_program_is_imported_and_optimized(capsys, tmp_path):
    model, x = _model()
    src = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(src))
    assert main(["-q", "opt", str(src), "-o", str(tmp_path / "out.onnx")]) == 0
    capsys.readouterr()
    graph = load_onnx(tmp_path / "out.onnx")
    (y,) = graph.run([x.numpy()])
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), atol=1e-5, rtol=1e-5)


def test_unreadable_pt2_names_the_file(capsys, tmp_path):
    src = tmp_path / "broken.pt2"
    src.write_bytes(b"not a zip")
    assert main(["show", str(src)]) == 1
    assert f"cannot load torch.export program '{src}'" in capsys.readouterr().err


def test_torch_default_exporter_works_and_imports(capsys, tmp_path):
    model, x = _model()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path))  # the dynamo exporter: needs onnxscript
    capsys.readouterr()
    (y,) = load_onnx(path).run([x.numpy()])
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), atol=1e-5, rtol=1e-5)
