"""Measured facts for a model report: TVM latency, accuracy on a bundled dataset, int8 sensitivity.

- `measure_latency(graph, target)`: builds with the TVM backend
  (`backends.tvm.compiled.compile_graph`, default schedules, no tuning), runs
  seeded inputs a few times to warm up, then times single calls until
  `min_seconds` have passed (at least `min_runs`, at most `max_runs`): median
  and min wall time per call, with the 1-minute load average, since a busy
  machine makes any timing meaningless.
- `digits_accuracy(graph)`: top-1 on scikit-learn's digits test split
  (`models.load_digits_data(seed=0)`, the split the bundled digits models and
  `graphopt demo` train against), in batches of the model's static batch size.
  `DatasetMismatch` says why a model's input or output does not fit.
- `int8_sensitivity(graph)`: `analysis.sensitivity` calibrated on digits
  training images when they fit the model, else on seeded random inputs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.progress import progress_bar

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph

__all__ = ["measure_latency", "digits_accuracy", "int8_sensitivity", "DatasetMismatch", "DATASETS"]

DATASETS = ("digits",)
DIGITS_SHAPES = ("[N, 1, 8, 8]", "[N, 64]")


class DatasetMismatch(GraphoptError):
    """A dataset's samples do not fit a model's input (or its labels its output)."""


def measure_latency(
    graph: Graph,
    target: str = "x86",
    *,
    seed: int = 0,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 1000,
    min_seconds: float = 0.5,
) -> dict[str, Any]:
    """{"target", "median_ms", "min_ms", "runs", "load_avg_1m"} of the TVM build of `graph` for `target`."""
    from graphopt.analysis.inputs import sample_inputs
    from graphopt.backends.tvm.compiled import compile_graph
    from graphopt.backends.tvm.targets import resolve_target, target_is_cross

    if target_is_cross(resolve_target(target)):
        raise GraphoptError(
            f"--target {target}: this machine cannot run code built for it, so its latency cannot be measured here "
            f"(compile it with 'graphopt compile' and time it on the device)"
        )
    compiled = compile_graph(graph, target)
    feeds = sample_inputs(graph, seed)
    for _ in range(warmup):
        compiled(*feeds)
    times: list[float] = []
    started = time.perf_counter()
    with progress_bar(total=min_runs, desc=f"latency {graph.name}", unit="run") as bar:
        while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - started < min_seconds):
            t0 = time.perf_counter()
            compiled(*feeds)
            times.append(time.perf_counter() - t0)
            bar.update()
    return {
        "target": str(target),
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "runs": len(times),
        "load_avg_1m": os.getloadavg()[0],
    }


def digits_layout(graph: Graph) -> tuple[int | None, tuple[int, ...]]:
    """(static batch size or None, per-sample shape) when digits images fit the graph's input."""
    if len(graph.inputs) != 1:
        raise DatasetMismatch(
            f"the digits test split has one input, images {' or '.join(DIGITS_SHAPES)} float32; "
            f"graph '{graph.name}' takes {len(graph.inputs)} inputs ({', '.join(graph.inputs)})"
        )
    name = graph.inputs[0]
    t = graph.type_of(name)
    sample = tuple(t.shape[1:])
    if t.dtype != "float32" or sample not in ((1, 8, 8), (64,)):
        raise DatasetMismatch(
            f"the digits test split is float32 images {' or '.join(DIGITS_SHAPES)}; graph '{graph.name}' "
            f"input '{name}' is {t.dtype}{list(t.shape)}"
        )
    batch = t.shape[0] if isinstance(t.shape[0], int) else None
    out = graph.type_of(graph.outputs[0])
    if out.shape[-1:] != (10,):
        raise DatasetMismatch(
            f"digits has 10 classes; graph '{graph.name}' output '{graph.outputs[0]}' is "
            f"{out.dtype}{list(out.shape)}, not [N, 10] scores"
        )
    return batch, sample


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Many small batch-1 runs: one thread is many times faster than a contended pool (and steadier)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def digits_accuracy(graph: Graph, *, seed: int = 0) -> dict[str, Any]:
    """{"dataset", "split", "samples", "top1"} on the digits test split; DatasetMismatch when it does not fit."""
    with _one_torch_thread():
        return _digits_accuracy(graph, seed)


def _digits_accuracy(graph: Graph, seed: int) -> dict[str, Any]:
    batch, sample = digits_layout(graph)
    x, y = _digits(seed, "test", sample)
    step = batch or 256
    correct = 0
    with progress_bar(total=len(x), desc=f"accuracy {graph.name}", unit="sample") as bar:
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            fill = step - len(chunk) if batch else 0  # a static batch: pad the last chunk, ignore the padding
            feeds = np.concatenate([chunk, np.zeros((fill, *sample), np.float32)]) if fill else chunk
            scores = np.asarray(graph.run([feeds])[0])[: len(chunk)]
            correct += int(np.count_nonzero(scores.reshape(len(chunk), -1).argmax(-1) == y[start : start + step]))
            bar.update(len(chunk))
    return {"dataset": "digits", "split": f"test (seed {seed})", "samples": len(x), "top1": correct / len(x)}


def int8_sensitivity(graph: Graph, *, samples: int = 32, seed: int = 0) -> dict[str, Any]:
    """{"calibration", "all_layers_db", "layers": {node: SQNR dB}}; a note instead when nothing is quantizable."""
    from graphopt.analysis.sensitivity import sensitivity

    try:
        batch, sample = digits_layout(graph)
    except DatasetMismatch:
        calibration, source = None, "seeded random inputs"
    else:
        x, _ = _digits(seed, "train", sample)
        step = batch or 8
        x = x[: max(samples // step, 1) * step]
        calibration = [[x[i : i + step]] for i in range(0, len(x), step)]
        source = f"{len(x)} digits training images"
    try:
        with _one_torch_thread():
            report = sensitivity(graph, calibration, seed=seed)
    except ValueError as e:  # already quantized: nothing left to try
        return {"calibration": source, "all_layers_db": None, "layers": {}, "note": str(e)}
    return {
        "calibration": source,
        "all_layers_db": report.all_quantized_db,
        "layers": {row.node: row.sqnr_db for row in report.rows},
    }


def _digits(seed: int, split: str, sample: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    try:
        from graphopt.models import load_digits_data

        data = load_digits_data(seed=seed)
    except ImportError as e:
        raise GraphoptError(f"the digits dataset needs scikit-learn ({e}): pip install -e '.[data]'") from e
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    return x.reshape(len(x), *sample).numpy(), y.numpy()
