"""benchmarks/quantization.py (graphopt int8 vs onnxruntime quantize_static) runs end to end on its smallest setting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime.quantization", reason="onnxruntime's quantizer is needed for the comparison")
pytest.importorskip("sklearn", reason="the digits data set comes from scikit-learn")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quantization.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quantization", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quantization_benchmark_smallest_setting(tmp_path, capsys):
    out = _bench().main(
        ["--models", "digits_cnn", "--digits-epochs", "1", "--digits-calib", "16", "--methods", "MinMax"]
        + ["--activations", "S8S8", "--budget", "0.05", "--no-tvm", "--out", str(tmp_path)]
    )
    rows = {r["contender"]: r for r in out["rows"]}
    assert set(rows) == {"onnxruntime fp32", "onnxruntime int8 S8S8", "graphopt int8 (onnxruntime)"}
    for name, r in rows.items():
        ms, load = r["median ms (load)"].split(" (load ")
        assert float(ms) > 0 and "acc " in r["quality"], (name, r)
        assert r["x ort fp32 (its ms)"].endswith(" ms)")  # the peer's absolute time beside every ratio
    assert rows["onnxruntime fp32"]["SQNR dB"] == "exact"
    for name in ("onnxruntime int8 S8S8", "graphopt int8 (onnxruntime)"):
        assert float(rows[name]["SQNR dB"]) > 10.0  # int8 of a trained CNN stays close to fp32
    assert [r[:3] for r in out["calibrators"]] == [
        ("digits_cnn", "onnxruntime S8S8", "MinMax"),
        ("digits_cnn", "graphopt", "quantize"),
    ]
    printed = capsys.readouterr().out
    assert (
        printed.startswith("# ") and "uptime before the run:" in printed and "| digits_cnn | graphopt int8" in printed
    )
