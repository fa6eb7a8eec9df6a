"""The pytest plugin `graphopt.testing`: the graphopt_check fixture passes, fails with the broken budgets, reads
ini defaults, and loads both through the pytest11 entry point and through `pytest_plugins`."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

MODEL = """
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()

X = (torch.randn(2, 16),)
"""

TESTS = """
import pytest
from mymodel import X, model

def test_cleanups_are_exact(graphopt_check):
    report = graphopt_check(model(), "fold-constants,eliminate-dead-code", example_inputs=X, max_abs_diff=1e-6)
    assert report.passed and report.results[0].measured <= 1e-6

def test_int8_within_20_db(graphopt_check):
    graphopt_check(model(), "quantize", example_inputs=X, min_sqnr_db=20)

def test_int8_is_not_within_80_db(graphopt_check):
    graphopt_check(model(), "quantize", example_inputs=X, min_sqnr_db=80)

def test_ini_default(graphopt_check):
    graphopt_check(model(), "quantize", example_inputs=X)
"""


# Subprocesses, not pytester's in-process runs: those drop the modules a run imported, and torch cannot
# register its operator libraries a second time when they are imported again.
@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mymodel=MODEL, test_model=TESTS)
    return pytester


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """test name -> PASSED/FAILED/ERROR from `-v` output."""
    found = {}
    for line in result.stdout.lines:
        m = re.match(r"test_model\.py::(\w+) (PASSED|FAILED|ERROR)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_fixture_passes_fails_names_the_broken_budget_and_fills_junit(project):
    project.makeconftest('pytest_plugins = ["graphopt.testing"]\n')
    project.makeini("[pytest]\ngraphopt_min_sqnr_db = 90\n")
    result = project.runpytest_subprocess("-v", "-p", "no:cacheprovider", "--junitxml=report.xml", timeout=300)
    assert outcomes(result) == {
        "test_cleanups_are_exact": "PASSED",
        "test_int8_within_20_db": "PASSED",
        "test_int8_is_not_within_80_db": "FAILED",
        "test_ini_default": "FAILED",  # the ini's 90 dB applies to a test that names no budget
    }, result.stdout.str()
    out = result.stdout.str()
    assert "pipeline 'quantize' on " in out and "broke 1 of 1 budgets" in out
    assert "min-sqnr: SQNR " in out and "budget >= 80 dB: BROKEN by " in out and "budget >= 90 dB: BROKEN by " in out
    assert "Traceback" not in out  # the failure is the budget diff, not a stack
    xml = (project.path / "report.xml").read_text()
    assert 'name="graphopt min-sqnr"' in xml and 'name="graphopt max-abs-diff"' in xml  # measured figures


def test_entry_point_loads_the_plugin_and_a_test_without_budget_is_told_so(project):
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"graphopt.testing": "graphopt.testing"}
    installed = [
        ep
        for dist in importlib.metadata.distributions()
        for ep in dist.entry_points
        if ep.group == "pytest11" and ep.value == "graphopt.testing"
    ]
    if not installed:
        pytest.skip(f"graphopt's installed metadata predates the entry point: pip install -e . ({sys.executable})")
    # no conftest: the installed plugin gives the fixture
    result = project.runpytest_subprocess("-v", "-p", "no:cacheprovider", "-k", "cleanups or ini_default", timeout=300)
    assert outcomes(result) == {"test_cleanups_are_exact": "PASSED", "test_ini_default": "FAILED"}
    assert "graphopt_check needs a budget" in result.stdout.str()
