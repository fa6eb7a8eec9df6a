"""`--calib FILE.npz`: calibration data for the pipeline commands (opt, save, compile, tune)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphopt
from graphopt.cli import main
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext, Pipeline
from graphopt.quant.calibration_data import RANDOM_CALIBRATION_NOTICE

CONV = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1))


def two_input_net() -> Graph:
    """conv(x) + y -> relu -> flatten -> linear; inputs x: f32[2,3,4,4], y: f32[2,4,4,4]."""
    rng = np.random.default_rng(0)
    g = Graph("two_in")
    x, y = g.add_input("x", TensorType((2, 3, 4, 4))), g.add_input("y", TensorType((2, 4, 4, 4)))
    w = g.add_param("conv.weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    c = g.add_node("conv", [x, w], attrs=CONV, name="conv").output
    a = g.add_node("add", [c, y], name="add").output
    f = g.add_node("flatten", [g.add_node("relu", [a], name="relu").output], name="flatten").output
    fw = g.add_param("fc.weight", rng.standard_normal((3, 64)).astype(np.float32) * 0.1)
    g.set_outputs([g.add_node("linear", [f, fw], name="fc").output])
    return g


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "two_in.onnx"
    two_input_net().save_onnx(path)
    return path


def samples(n: int, seed: int = 1, scale: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": (rng.standard_normal((n, 2, 3, 4, 4)) * scale).astype(np.float32),
        "y": rng.standard_normal((n, 2, 4, 4, 4)).astype(np.float32),
    }


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def expected_output(model, sets, x):
    g = graphopt.load_onnx(model)
    q = Pipeline.parse("quantize").run(g, PassContext(calibration=sets)).graph
    return q.run(x)[0]


def test_opt_calibrates_on_each_sample_of_the_file(model, tmp_path, capsys):
    data = samples(3)
    np.savez(tmp_path / "calib.npz", **data)
    out = tmp_path / "q.onnx"
    rc, stdout, err = cli(capsys, "opt", "-p", "quantize", model, "-o", out, "--calib", tmp_path / "calib.npz")
    assert rc == 0, err
    assert "3 calibration sets (6 samples)" in err and RANDOM_CALIBRATION_NOTICE not in err
    assert "calibration data: 6 samples in 3 sets" in stdout  # the pass's own statistics
    sets = [[data["x"][i], data["y"][i]] for i in range(3)]
    probe = [s[0] / 3 for s in samples(1, seed=7).values()]
    ours = graphopt.load_onnx(out).run(probe)[0]
    np.testing.assert_allclose(ours, expected_output(model, sets, probe), atol=1e-6)
    # the file's data, not random inputs, set the input scale: |x| reaches ~3x a standard normal
    scale = next(p for n, p in graphopt.load_onnx(out).params.items() if n.endswith("x.scale"))
    assert float(scale.data) == pytest.approx(np.abs(data["x"]).max() / 127.5, rel=1e-6)


def test_rows_in_batches_and_positional_names(model, tmp_path, capsys):
    data = samples(3)
    rows = {"input_0": data["x"].reshape(6, 3, 4, 4)[:5], "input_1": data["y"].reshape(6, 4, 4, 4)[:5]}
    np.savez(tmp_path / "rows.npz", **rows)
    out = tmp_path / "q.onnx"
    rc, _, err = cli(capsys, "opt", "-q", "-p", "quantize", model, "-o", out, "--calib", tmp_path / "rows.npz")
    assert rc == 0, err
    assert "1 rows left out (not a whole batch of 2)" in err  # a warning, shown even with -q
    sets = [[data["x"][i], data["y"][i]] for i in range(2)]
    probe = [s[0] for s in samples(1, seed=7).values()]
    np.testing.assert_allclose(graphopt.load_onnx(out).run(probe)[0], expected_output(model, sets, probe), atol=1e-6)


def test_without_calib_a_calibrating_pass_says_it_uses_random_inputs(model, tmp_path, capsys):
    rc, _, err = cli(capsys, "opt", "-q", "-p", "quantize", model)
    assert rc == 0 and f"graphopt: warning: {RANDOM_CALIBRATION_NOTICE}" in err
    assert err.count(RANDOM_CALIBRATION_NOTICE) == 1
    rc, _, err = cli(capsys, "opt", "-q", "-p", "fold-bn", model)  # nothing calibrates: nothing to say
    assert rc == 0 and RANDOM_CALIBRATION_NOTICE not in err


def test_save_takes_calib(model, tmp_path, capsys):
    np.savez(tmp_path / "calib.npz", **samples(2))
    out = tmp_path / "q.gopt"
    rc, _, err = cli(capsys, "save", "-p", "quantize", model, "-o", out, "--calib", tmp_path / "calib.npz")
    assert rc == 0 and "2 calibration sets (4 samples)" in err and out.exists(), err


def test_compile_takes_calib_and_checks_it_before_the_build(model, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=samples(2)["x"])
    lib = tmp_path / "q.so"
    rc, _, err = cli(capsys, "compile", model, "-o", lib, "-p", "quantize", "--calib", tmp_path / "bad.npz")
    assert rc == 1 and "missing ['y']" in err and "compiling" not in err and not lib.exists()
    data = samples(2)
    np.savez(tmp_path / "calib.npz", **data)
    rc, _, err = cli(capsys, "compile", model, "-o", lib, "-p", "quantize", "--calib", tmp_path / "calib.npz")
    assert rc == 0, err
    sets = [[data["x"][i], data["y"][i]] for i in range(2)]
    probe = [s[0] for s in samples(1, seed=7).values()]
    expected = expected_output(model, sets, probe)
    got = graphopt.load_compiled(lib)(*probe)
    step = float(np.abs(expected).max()) / 127  # integer kernels may round once more
    assert np.abs(np.asarray(got) - expected).max() <= step


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({}, "holds no arrays: the calibration set is empty"),
        ({"x": samples(2)["x"]}, r"missing \['y'\]"),
        ({**samples(2), "z": np.zeros(3, np.float32)}, r"unknown \['z'\]"),
        ({"input_0": samples(2)["x"]}, r"missing \['x', 'y'\]"),
        (
            {"x": samples(2)["x"].astype(np.float64), "y": samples(2)["y"]},
            r"array 'x' \(graph input 'x'\) has dtype float64; the graph expects float32\[2, 3, 4, 4\]",
        ),
        (
            {"x": samples(2)["x"][:, :, :2], "y": samples(2)["y"]},
            r"array 'x' .* has shape \[2, 2, 2, 4, 4\]; the graph expects float32\[2, 3, 4, 4\]",
        ),
        ({"x": samples(2)["x"][:0], "y": samples(2)["y"][:0]}, "has no samples .*the calibration set is empty"),
        ({"x": samples(2)["x"][0, :1], "y": samples(2)["y"][0, :1]}, "fewer than one batch of 2"),
        ({"x": samples(2)["x"], "y": samples(3)["y"]}, r"different numbers of calibration sets \('x': 2, 'y': 3\)"),
    ],
    ids=["empty", "missing", "unknown", "partly-positional", "dtype", "shape", "no-samples", "short", "counts"],
)
def test_bad_calibration_files_are_clear_errors(model, tmp_path, capsys, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    out = tmp_path / "q.onnx"
    rc, _, err = cli(capsys, "opt", "-p", "quantize", model, "-o", out, "--calib", path)
    assert rc == 1 and not out.exists()
    assert err.startswith(f"graphopt: error: --calib '{path}'"), err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_not_an_npz_and_missing_file(model, tmp_path, capsys):
    (tmp_path / "text.npz").write_text("not a zip")
    rc, _, err = cli(capsys, "opt", "-p", "quantize", model, "--calib", tmp_path / "text.npz")
    assert rc == 1 and "is not a readable .npz file" in err
    rc, _, err = cli(capsys, "opt", "-p", "quantize", model, "--calib", tmp_path / "none.npz")
    assert rc == 1 and "none.npz" in err and "no such file" in err.lower()
