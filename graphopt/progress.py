"""Progress bars for long work (calibration, training, AdaRound, benchmarks), decided in one place.

    for batch in progress_bar(batches, desc="calibrate", unit="sample"):
        ...

Bars are tqdm's, on stderr. Whether they show is decided once per process:
`set_progress(False)` (what the CLI's `-q` does) or `set_progress(True)`
(force them, e.g. in a notebook whose stderr is not a terminal); until one of
these is called, the first bar decides from whether stderr is a terminal, so
logs, pipes and CI output never fill with carriage returns. A disabled bar
costs nothing and writes nothing; the libraries' own `log=` lines are
independent of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

__all__ = ["set_progress", "progress_enabled", "progress_bar"]

_enabled: bool | None = None  # None: not decided yet


def set_progress(enabled: bool | None) -> None:
    """Show bars (True), never (False), or decide from stderr being a terminal at the next bar (None)."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether bars show; decided on first call when `set_progress` was not."""
    global _enabled
    if _enabled is None:
        _enabled = _stderr_is_terminal()
    return _enabled


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
):
    """A tqdm bar over `iterable` (or a manual one: `update(n)`, `close()`), silent unless progress is enabled.

    enabled=False silences this one bar (e.g. on every rank but the first).
    Use it as a context manager (or close it) so a loop left early still ends its line.
    """
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not (enabled and progress_enabled()),
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.2,
    )


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
