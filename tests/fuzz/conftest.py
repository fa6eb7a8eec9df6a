"""Fuzz-suite setup: one torch thread, hypothesis profiles, the soak marker, and the counts summary.

CI runs the derandomized examples (the same models every run); `pytest -m soak
tests/fuzz` runs thousands of fresh ones. Hypothesis prints a failing example
shrunk, as `Arch(...)` / `Plan(...)` / text that reproduce it.
"""

from __future__ import annotations

import pytest
import torch
from fuzz_checks import COUNTS
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


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        terminalreporter.write_sep("-", "fuzz counts")
        for key, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{key}: {n}")
