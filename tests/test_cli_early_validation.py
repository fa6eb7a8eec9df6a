"""Bad options fail before any import: the input named here does not even exist."""

from __future__ import annotations

from graphopt.cli import main


def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("graphopt: error:") == 1 and "no such file" not in err
    return err


def test_opt_refuses_a_bad_pipeline_and_output_first(capsys, tmp_path):
    assert "fold-bnx" in _error(capsys, "opt", tmp_path / "missing.onnx", "-p", "fold-bnx")
    assert "directory" in _error(capsys, "opt", tmp_path / "missing.onnx", "-o", f"{tmp_path}/")
