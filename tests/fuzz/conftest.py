"""Fuzz-suite setup: one torch thread, hypothesis profiles, the soak marker, and the counts summary.

CI runs the derandomized examples (the same models every run); `pytest -m soak
tests/fuzz` runs thousands of fresh ones. Hypothesis prints a failing example
shrunk, as `Arch(...)` / `Plan(...)` / text that reproduce it.

The summary at the end of a run (printed, and written as `fuzz_summary.json` in
pytest's base temp directory): the counts (models generated, passes applied,
builds per target, refusals and known bugs counted), the fuzz tests that found a
crash or a mismatch, CPU seconds per stage, wall time and the load average.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from fuzz_checks import COUNTS, SECONDS
from hypothesis import HealthCheck, settings

# Tiny models: one thread is several times faster than two on a shared machine (no spinning).
BASE = dict(deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz-ci", derandomize=True, **BASE)
settings.register_profile("fuzz-soak", derandomize=False, **BASE)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if "soak" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="soak run: select with `pytest -m soak tests/fuzz`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


FINDINGS = {"crashes": [], "mismatches": []}  # failing fuzz tests (each one shrunk example), by kind
_START = time.time()
# what a wrong result raises; anything else a fuzzed model raises is a crash (xfail-marked tests are not findings)
_MISMATCH = ("AssertionError", "NumericalMismatchError", "VerificationError")


def pytest_runtest_makereport(item, call):
    if call.when != "call" or call.excinfo is None or item.get_closest_marker("xfail") is not None:
        return
    if call.excinfo.errisinstance(pytest.skip.Exception):
        return
    kind = "mismatches" if call.excinfo.type.__name__ in _MISMATCH else "crashes"
    first = (str(call.excinfo.value).strip().splitlines() or [""])[0][:200]
    FINDINGS[kind].append(f"{item.nodeid}: {call.excinfo.type.__name__}: {first}")


def pytest_terminal_summary(terminalreporter, config):
    if not COUNTS:
        return
    summary = {
        "counts": dict(sorted(COUNTS.items())),
        "crashes": len(FINDINGS["crashes"]),
        "mismatches": len(FINDINGS["mismatches"]),
        "findings": FINDINGS["crashes"] + FINDINGS["mismatches"],
        "cpu_seconds_per_stage": {k: round(v, 2) for k, v in SECONDS.most_common()},
        "wall_seconds": round(time.time() - _START, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "fuzz counts")
    for key, n in summary["counts"].items():
        write(f"{key}: {n}")
    write(f"crashes found: {summary['crashes']}, mismatches found: {summary['mismatches']}")
    for line in summary["findings"]:
        write(f"  {line}")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in summary["cpu_seconds_per_stage"].items())
    write(f"CPU s per stage: {stages}")
    write(f"wall {summary['wall_seconds']} s at load average {summary['load_average_1_5_15']}")
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        path = factory.getbasetemp() / "fuzz_summary.json"
        path.write_text(json.dumps(summary, indent=1) + "\n")
        write(f"summary: {path}")
