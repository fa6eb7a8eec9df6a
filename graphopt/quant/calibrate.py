"""Calibration: run a graph over input sets and let one observer per value watch it.

`calibrate_ranges` captures every observed value in one `graph.run(capture=...)`
per input set, stops once `samples` rows (leading dim of the first input) have
been seen, and reports one progress line per set through `log` (and a
`graphopt.progress` bar on a terminal). Input sets are
checked first: a set must give every graph input, with the input's dtype and
static dims (the shapes it was traced or imported with), so bad data fails
with a message naming the set and input instead of an error deep in the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.progress import progress_bar
from graphopt.quant.observers import make_observer


class CalibrationError(GraphoptError):
    """Calibration data is missing, empty or does not fit the graph's inputs."""


@dataclass(frozen=True)
class CalibrationRun:
    ranges: dict[str, tuple[float, float]]
    sets: int
    samples: int


def check_calibration_set(graph: Graph, inputs, index: int) -> list[np.ndarray]:
    """`inputs` as arrays in graph-input order; CalibrationError naming set `index` and the input at fault."""
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise CalibrationError(
            f"calibration set {index} has {len(inputs)} arrays; the graph takes {len(graph.inputs)} "
            f"({', '.join(graph.inputs)})"
        )
    out = []
    for name, x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        t = graph.type_of(name)
        expect = [d if isinstance(d, int) else None for d in t.shape]
        fits = x.ndim == len(expect) and all(e is None or e == d for e, d in zip(expect, x.shape))
        if not fits or x.dtype != np.dtype(t.dtype) or (x.ndim and x.shape[0] == 0):
            raise CalibrationError(
                f"calibration set {index}, input '{name}': got {x.dtype}{list(x.shape)}, the graph expects "
                f"{t.dtype}{list(t.shape)}"
            )
        out.append(x)
    return out


def calibrate_ranges(
    graph: Graph,
    values: Sequence[str],
    sets: Iterable[Sequence[np.ndarray]],
    *,
    method: str = "minmax",
    dtype: str = "int8",
    symmetric: bool | str = True,
    percentile: float = 99.99,
    samples: int = 128,
    log: Callable[[str], None] | None = None,
) -> CalibrationRun:
    """The real range {value: (lo, hi)} each of `values` takes over the calibration sets."""
    if samples < 1:
        raise CalibrationError(f"samples must be at least 1, got {samples}")
    observers = {v: make_observer(method, dtype=dtype, symmetric=symmetric, percentile=percentile) for v in values}
    seen = count = 0
    logged = None  # the last progress line logged: a line is logged when its bar grows, and the last one
    with progress_bar(total=samples, desc="calibrate", unit="sample") as bar:
        for count, raw in enumerate(sets, 1):
            feeds = check_calibration_set(graph, raw, count - 1)
            _, captured = graph.run(feeds, capture=list(values))
            for v, x in captured.items():
                observers[v].observe(x)
            rows = feeds[0].shape[0] if feeds and feeds[0].ndim else 1
            bar.update(min(rows, max(samples - seen, 0)))
            seen += rows
            line = _progress(count, seen, samples)
            if log is not None and (logged is None or _bar(line) != _bar(logged) or seen >= samples):
                log(line)
                logged = line
            if seen >= samples:
                break
    if log is not None and count and logged != (line := _progress(count, seen, samples)):
        log(line)
    if count == 0:
        raise CalibrationError("the calibration set is empty: no input set was given")
    ranges = {}
    for v, ob in observers.items():
        try:
            ranges[v] = ob.range()
        except ValueError as e:
            raise CalibrationError(f"value '%{v}': {e} during calibration (every value was NaN or inf)") from None
    return CalibrationRun(ranges, count, seen)


def _bar(line: str) -> str:
    return line[: line.index("]")]


def _progress(sets: int, seen: int, samples: int, width: int = 24) -> str:
    done = min(seen, samples)
    bar = "#" * (width * done // samples)
    return f"calibrating [{bar:<{width}}] {done}/{samples} samples ({sets} set{'s' if sets != 1 else ''})"
