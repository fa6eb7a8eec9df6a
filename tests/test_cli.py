"""The `graphopt` CLI: passes, opt, show, demo, and one clear message for bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from graphopt.backends.onnxruntime import run_onnx
from graphopt.cli import main
from graphopt.passes import Pass, PassResult, register_pass, registered_passes
from graphopt.passes.pipeline import option_types
from graphopt.passes.registry import unregister_pass

CLEANUP = "fold-bn,fold-constants,eliminate-identity,eliminate-dead-code"


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3, bias=False),
            nn.BatchNorm2d(4),
        )

    def forward(self, x):
        return torch.flatten(self.body(x), 1)


@pytest.fixture(scope="module")
def bn_model(tmp_path_factory):
    """(path of an ONNX file with two BatchNormalization nodes, an input, torch's output)."""
    torch.manual_seed(0)
    model = ConvBN().eval()
    for bn in (model.body[1], model.body[4]):  # non-trivial statistics, so folding matters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(1, 3, 10, 10)
    path = tmp_path_factory.mktemp("model") / "convbn.onnx"
    # the TorchScript exporter without constant folding keeps the BatchNormalization nodes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, do_constant_folding=False, input_names=["x"], output_names=["y"]
        )
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("BatchNormalization") == 2
    with torch.no_grad():
        expected = model(x).numpy()
    return path, x.numpy(), expected


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(err: str, *parts: str) -> str:
    """stderr ends with one 'graphopt: error:' message (a parse error adds its caret lines).

    Progress lines of steps that ran before the failure may precede it. Returns the message.
    """
    assert "Traceback" not in err
    assert err.count("graphopt: error:") == 1
    message = err[err.index("graphopt: error:") :]
    for part in parts:
        assert part in message
    return message


# ---- passes ---------------------------------------------------------------------------


def test_passes_lists_every_pass_with_options(capsys):
    rc, out, err = cli(capsys, "passes")
    assert rc == 0 and err == ""
    for name, cls in registered_passes().items():
        assert f"\n{name}\n" in f"\n{out}\n"
        for option in option_types(cls):
            assert f"    {option}: " in out
    assert "fold-bn" in out and "tolerance: " in out


def test_passes_shows_types_and_defaults(capsys):
    @dataclass(frozen=True)
    class Documented(Pass):
        """Does nothing, with options."""

        name: ClassVar[str] = "test-documented"
        ratio: float = 0.5
        mode: str = "l1"

    register_pass(Documented)
    try:
        rc, out, _ = cli(capsys, "passes", "test-documented")
    finally:
        unregister_pass("test-documented")
    assert rc == 0
    assert out.splitlines() == [
        "test-documented",
        "    Does nothing, with options.",
        "  options:",
        "    ratio: float (default 0.5)",
        "    mode: str (default l1)",
        "  tolerance: atol=1e-05 rtol=1e-05",
    ]


def test_passes_unknown_name(capsys):
    rc, out, err = cli(capsys, "passes", "fold-bm")
    assert rc == 1 and out == ""
    assert_one_error(err, "unknown pass 'fold-bm'", "did you mean 'fold-bn'?")


# ---- opt ------------------------------------------------------------------------------


def test_opt_folds_batch_norm_and_keeps_outputs(capsys, bn_model, tmp_path):
    path, x, expected = bn_model
    out_path, dump = tmp_path / "out.onnx", tmp_path / "ir"
    rc, out, err = cli(capsys, "opt", "-p", CLEANUP, path, "-o", out_path, "--dump-ir", dump)
    assert rc == 0, err
    model = onnx.load(str(out_path))
    onnx.checker.check_model(model, full_check=True)
    assert "BatchNormalization" not in [n.op_type for n in model.graph.node]
    (y,) = run_onnx(model, [x])
    np.testing.assert_allclose(y, expected, atol=1e-4, rtol=1e-4)
    # the report: one row per pass with its time, and the op table
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in CLEANUP.split(","):
        assert " ms " in rows[name]
    assert "folded=2" in rows["fold-bn"]
    assert rows["batch_norm"].split()[1:] == ["2", "0", "-2"]
    assert f"wrote {out_path}" in out
    # progress went to stderr, one line per pass
    assert "[1/4] fold-bn" in err and "[4/4] eliminate-dead-code" in err
    assert (dump / "00-input.mlir.txt").exists() and len(list(dump.iterdir())) == 9


def test_opt_print_ir_and_no_output(capsys, bn_model):
    path, _, _ = bn_model
    rc, out, err = cli(capsys, "-q", "opt", "-p", "fold-bn", path, "--print-ir", "--no-verify")
    assert rc == 0 and err == ""
    assert "\ngraph " in out and "batch_norm(" not in out and "wrote" not in out


# ---- show -----------------------------------------------------------------------------


def test_show_prints_ir_and_summary(capsys, bn_model):
    path, _, _ = bn_model
    rc, out, err = cli(capsys, "show", path)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("graph ") and "batch_norm(" in out
    assert lines[-1].startswith("graph ") and " nodes, " in lines[-1] and "batch_norm=2" in lines[-1]
    rc, out, _ = cli(capsys, "show", "--summary", path)
    assert rc == 0 and out.strip() == lines[-1]


# ---- bad input: one message, exit 1, nothing written -------------------------------------------


def test_bad_pipeline_names_position(capsys, bn_model, tmp_path):
    path, _, _ = bn_model
    out_path = tmp_path / "out.onnx"
    rc, out, err = cli(capsys, "opt", "-p", "fold-bn,,eliminate-dead-code", path, "-o", out_path)
    assert rc == 1 and out == ""
    assert_one_error(err, "expected a pass name, found ',' at position 8")
    assert err.splitlines() == [
        "graphopt: error: expected a pass name, found ',' at position 8",
        "  fold-bn,,eliminate-dead-code",
        "          ^",
    ]
    assert not out_path.exists()


def test_unknown_pass_and_option(capsys, bn_model, tmp_path):
    path, _, _ = bn_model
    rc, _, err = cli(capsys, "opt", "-p", "fold-bm", path, "-o", tmp_path / "o.onnx")
    assert rc == 1
    assert_one_error(err, "unknown pass 'fold-bm'", "did you mean 'fold-bn'?", "at position 0")
    rc, _, err = cli(capsys, "opt", "-p", "fold-constants{max=3}", path, "-o", tmp_path / "o.onnx")
    assert rc == 1
    assert_one_error(err, "unknown option 'max'", "valid options: max_elements: int", "at position 15")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_malformed_onnx_names_the_file(capsys, bn_model, tmp_path, damage):
    path, _, _ = bn_model
    data = path.read_bytes()
    bad = tmp_path / f"{damage}.onnx"
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x08\xff not a model " * 10, "empty": b""}[damage]
    )
    out_path = tmp_path / "out.onnx"
    for argv in (["opt", "-p", CLEANUP, bad, "-o", out_path], ["show", bad]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 1 and out == ""
        assert_one_error(err, str(bad))
        assert len(err.splitlines()) == 1  # nothing but the message
    assert not out_path.exists()


def test_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.onnx"
    rc, out, err = cli(capsys, "show", missing)
    assert rc == 1 and out == ""
    assert_one_error(err, str(missing))
    rc, _, err = cli(capsys, "opt", "-p", "fold-bn", tmp_path, "-o", tmp_path / "o.onnx")
    assert rc == 1
    assert_one_error(err, "is a directory", str(tmp_path))


@dataclass(frozen=True)
class BreakWeights(Pass):
    """Deliberately wrong: scales every float parameter but claims to be exact."""

    name: ClassVar[str] = "test-break-weights"
    factor: float = 1.5

    def run(self, graph, ctx):
        for name, p in list(graph.params.items()):
            if p.data.dtype == np.float32 and p.data.size > 1:
                graph.set_param(name, p.data * np.float32(self.factor))
        return PassResult(graph, True)


def test_failing_pass_writes_nothing(capsys, bn_model, tmp_path):
    path, _, _ = bn_model
    out_path = tmp_path / "out.onnx"
    out_path.write_bytes(b"previous result")
    register_pass(BreakWeights)
    try:
        rc, out, err = cli(capsys, "opt", "-p", "fold-bn,test-break-weights{factor=2.0}", path, "-o", out_path)
        assert rc == 1
        assert_one_error(
            err, "pass 'test-break-weights{factor=2.0}' changed the model's outputs", "passes before it: fold-bn"
        )
        assert out_path.read_bytes() == b"previous result"
        assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary left behind
        # with --no-verify the same pipeline runs and writes
        rc, _, err = cli(capsys, "opt", "-p", "test-break-weights", path, "-o", out_path, "--no-verify")
        assert rc == 0, err
        assert out_path.read_bytes() != b"previous result"
    finally:
        unregister_pass(BreakWeights.name)


def test_usage_errors_exit_2(capsys, bn_model):
    path, _, _ = bn_model
    assert cli(capsys, "opt")[0] == 2  # no input file
    assert cli(capsys, "frobnicate")[0] == 2
    assert cli(capsys)[0] == 2
    assert cli(capsys, "--help")[0] == 0


def test_subprocess_entry_point_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    cmd = [sys.executable, "-m", "graphopt.cli", "show", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert_one_error(proc.stderr, str(bad))


def test_traceback_flag_shows_the_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    for argv in (["--traceback", "show", bad], ["show", bad, "--traceback"]):
        rc, _, err = cli(capsys, *argv)
        assert rc == 1 and "Traceback (most recent call last)" in err and "FrontendError" in err


# ---- demo -----------------------------------------------------------------------------


def test_demo_runs_end_to_end(capsys, tmp_path):
    rc, out, err = cli(capsys, "demo", "--out", tmp_path / "demo", "--epochs", "3")
    assert rc == 0, err
    written = tmp_path / "demo" / "model.onnx"
    assert written.exists()
    ops = [n.op_type for n in onnx.load(str(written)).graph.node]
    assert "BatchNormalization" not in ops and "Conv" in ops
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["batch_norm"][1:] == ["3", "0", "-3"]
    accuracy = rows["onnxruntime (model.onnx)"][3]
    assert accuracy.endswith("%") and float(accuracy[:-1]) > 80  # real digits, trained briefly
    assert rows["TVM x86 (compiled)"][4] == accuracy  # the compiled library agrees too
    assert (tmp_path / "demo" / "model.so").exists() and (tmp_path / "demo" / "model.so.json").exists()
    assert f"wrote {written}: same outputs as the torch model" in out
    assert "training digits_cnn" in err  # progress on stderr
