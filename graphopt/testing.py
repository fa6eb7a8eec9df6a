"""pytest plugin: assert in a test that a pipeline keeps your model within tolerance.

Installed with graphopt (a `pytest11` entry point), or named explicitly in a
conftest.py with `pytest_plugins = ["graphopt.testing"]`. The `graphopt_check`
fixture runs a pipeline on a model (an nn.Module with example inputs, an ONNX
path or proto, or a graphopt Graph; never modified) and fails the test with the
broken budgets, measured against the original model:

    def test_int8_keeps_my_model(graphopt_check):
        model = MyNet().eval()
        report = graphopt_check(model, "fold-bn,quantize", example_inputs=(torch.randn(1, 3, 32, 32),),
                                min_sqnr_db=25, max_abs_diff=0.05)
        assert report.passed

Budgets are those of `graphopt.check.check_model` (min_sqnr_db, max_abs_diff,
max_accuracy_drop with accuracy="digits", max_latency_ms with target). A test
that names none takes the project's defaults from pytest's ini options
`graphopt_min_sqnr_db` and `graphopt_max_abs_diff`; with neither it is a usage
error. Every measurement is also recorded in the test's user properties, so
pytest's own `--junitxml` report carries the figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from graphopt.check import CheckReport

_INI_BUDGETS = {
    "graphopt_min_sqnr_db": ("min_sqnr_db", "default min_sqnr_db of graphopt_check, in dB"),
    "graphopt_max_abs_diff": ("max_abs_diff", "default max_abs_diff of graphopt_check"),
}
_BUDGETS = ("min_sqnr_db", "max_abs_diff", "max_accuracy_drop", "max_latency_ms")


def pytest_addoption(parser: pytest.Parser) -> None:
    for ini, (_, help_text) in _INI_BUDGETS.items():
        parser.addini(ini, help_text, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "graphopt: a test that checks a graphopt pipeline against budgets")


@pytest.fixture
def graphopt_check(request: pytest.FixtureRequest) -> Callable[..., "CheckReport"]:
    """`graphopt_check(model, pipeline, *, example_inputs=None, min_sqnr_db=..., max_abs_diff=..., ...)`:
    run `pipeline` on `model`, fail the test naming every broken budget, return the CheckReport."""
    defaults = _ini_defaults(request.config)

    def check(model, pipeline, **options: Any) -> "CheckReport":
        from graphopt.check import check_model

        if not any(options.get(b) is not None for b in _BUDGETS):
            options = {**defaults, **options}
        if not any(options.get(b) is not None for b in _BUDGETS):
            raise pytest.UsageError(
                "graphopt_check needs a budget: min_sqnr_db=, max_abs_diff=, max_accuracy_drop= (with accuracy=) "
                "or max_latency_ms= (with target=), or an ini default (graphopt_min_sqnr_db, graphopt_max_abs_diff)"
            )
        report = check_model(model, pipeline, **options)
        for r in report.results:
            request.node.user_properties.append((f"graphopt {r.name}", f"{r.measured:.6g}{r.unit}"))
        if not report.passed:
            pytest.fail(report.failure_message() + "\n" + report.table(), pytrace=False)
        return report

    return check


def _ini_defaults(config: pytest.Config) -> dict[str, float]:
    found = {}
    for ini, (option, _) in _INI_BUDGETS.items():
        raw = config.getini(ini)
        if raw in (None, ""):
            continue
        try:
            found[option] = float(raw)
        except ValueError:
            raise pytest.UsageError(f"ini option {ini} = {raw!r} is not a number") from None
    return found
