"""benchmarks/low_bit.py (W4A8 recovery methods on the digits CNN) runs end to end on its smallest setting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the digits data set comes from scikit-learn")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "low_bit.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_low_bit", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_low_bit_benchmark_smallest_setting(capsys):
    out = _bench().main(["--epochs", "1", "--iterations", "5", "--calib", "64"])
    rows = {r["method"]: r for r in out["rows"]}
    assert list(rows) == ["float", "plain rounding", "CLE", "bias correction", "AdaRound"] + [
        "CLE + AdaRound + bias correction"
    ]
    for name, r in rows.items():
        assert 0.0 <= r["acc"] <= 1.0 and r["sqnr"] > 5.0, (name, r)
    assert out["aimet"].startswith(("absent: ", "available ("))
    table = capsys.readouterr().out
    assert "| plain rounding | " in table and "AIMET: " in table
