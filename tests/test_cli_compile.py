"""`graphopt compile` and `graphopt tune` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphopt
from graphopt.cli import main
from graphopt.models import get_model


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    model, (x,) = get_model("digits_mlp", seed=2)
    path = tmp_path_factory.mktemp("cli") / "mlp.onnx"
    graphopt.trace(model, (x,)).save_onnx(path)
    return path, x.numpy(), model(x).detach().numpy()


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_compile_writes_library_and_metadata(capsys, digits_onnx, tmp_path):
    path, x, expected = digits_onnx
    out_lib = tmp_path / "mlp.so"
    rc, out, err = cli(capsys, "compile", path, "--target", "x86", "-o", out_lib)
    assert rc == 0, err
    assert f"wrote {out_lib}" in out and "fold-bn" in err  # per-pass progress on stderr
    meta = json.loads((tmp_path / "mlp.so.json").read_text())
    assert meta["inputs"][0]["shape"] == list(x.shape)
    np.testing.assert_allclose(graphopt.load_compiled(out_lib)(x), expected, atol=1e-5)


def test_compile_cross_target(capsys, digits_onnx, tmp_path):
    rc, out, err = cli(capsys, "-q", "compile", digits_onnx[0], "--target", "arm", "-o", tmp_path / "m.so")
    assert rc == 0, err
    assert json.loads((tmp_path / "m.so.json").read_text())["host_arch"] == "aarch64"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "armv9"], "unknown target 'armv9'"),
        (["-p", "fold-bn{ratio=1}"], "unknown option 'ratio'"),
        (["--tune", "2"], "needs db=DIR"),
    ],
)
def test_compile_errors_are_one_line_and_write_nothing(capsys, digits_onnx, tmp_path, args, message):
    out_lib = tmp_path / "never.so"
    rc, out, err = cli(capsys, "compile", digits_onnx[0], "-o", out_lib, *args)
    assert rc == 1 and "Traceback" not in err
    assert err.count("graphopt: error:") == 1 and message in err
    assert not out_lib.exists() and not (tmp_path / "never.so.json").exists()


def test_tune_rejects_a_malformed_tracker(capsys, digits_onnx, tmp_path):
    rc, out, err = cli(
        capsys,
        "tune",
        digits_onnx[0],
        "--db",
        tmp_path / "db",
        "--trials",
        "2",
        "--rpc-tracker",
        "localhost",
        "--rpc-key",
        "x86",
    )
    assert rc == 1 and "--rpc-tracker wants HOST:PORT" in err
