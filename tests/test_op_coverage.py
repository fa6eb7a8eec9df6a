"""docs/op_coverage.md is in sync with the frontends' rule tables and the opaque probes (benchmarks/op_coverage.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("tvm")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "op_coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("op_coverage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_doc_is_current(coverage):
    assert coverage.check() == [], "run: python3 benchmarks/op_coverage.py"


def test_every_mapped_op_has_a_row(coverage):
    from graphopt.frontends import fx_ops, onnx_ops

    text = coverage.DOC.read_text()
    for op in [*map(str, fx_ops.RULES), *onnx_ops.RULES]:
        assert f"| `{op}` |" in text


def test_check_notices_a_stale_row(coverage, tmp_path, monkeypatch):
    stale = tmp_path / "op_coverage.md"
    stale.write_text(coverage.DOC.read_text().replace("| torch | `aten.lstm.input` | lstm |", "| torch | `x` | y |"))
    monkeypatch.setattr(coverage, "DOC", stale)
    problems = coverage.check()
    assert len(problems) == 1 and "aten.lstm.input" in problems[0]
