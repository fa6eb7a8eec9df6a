"""Budgets for a pipeline in CI: run it on a model, measure against the original, say what broke.

    report = check_model("digits.onnx", "fold-bn,quantize", min_sqnr_db=25, max_accuracy_drop=1.0,
                         accuracy="digits", max_latency_ms=2.0, target="x86")
    print(report.table()); report.write_junit("check.xml"); assert report.passed

Budgets, each measured only when asked for:
- `min_sqnr_db`: SQNR of every output of the optimized model against the original's, in dB,
  over `inputs` (sets in graph-input order) or seeded random inputs (`seed`, `samples` sets);
  the worst output counts.
- `max_abs_diff`: largest absolute difference of any output element on those inputs.
- `max_accuracy_drop` (percentage points) with `accuracy="digits"`: top-1 accuracy of the
  original minus that of the optimized model on scikit-learn's digits test split (the
  images reshaped to the model's input, batched by its batch dimension).
- `max_latency_ms` with `target`: median latency of the optimized model built by TVM for
  `target` and run on this machine.

The user's model is never modified: the pipeline runs on a copy.
"""

from __future__ import annotations

import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.errors import GraphoptError

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes import Pipeline

ACCURACY_DATASETS = ("digits",)


@dataclass(frozen=True)
class BudgetResult:
    """One budget: its limit, what was measured, and by how much it was kept or broken."""

    name: str  # "min-sqnr", "max-abs-diff", "max-accuracy-drop", "max-latency"
    what: str  # what was measured, in words
    limit: float
    measured: float
    unit: str
    at_least: bool  # True: measured must be >= limit; False: <= limit
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    @property
    def margin(self) -> float:
        """How far inside the budget the measurement is (negative: by how much it is broken)."""
        return self.measured - self.limit if self.at_least else self.limit - self.measured

    def budget_text(self) -> str:
        return f"{'>=' if self.at_least else '<='} {_num(self.limit)}{self.unit}"

    def verdict(self) -> str:
        """'kept, 4.1 dB to spare' or 'BROKEN by 3.2 dB'."""
        if math.isnan(self.measured):
            return "BROKEN (not a number)"
        amount = f"{_num(abs(self.margin))}{self.unit}"
        return f"kept, {amount} to spare" if self.passed else f"BROKEN by {amount}"

    def line(self) -> str:
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"{self.name}: {self.what} {_num(self.measured)}{self.unit}, budget {self.budget_text()}: "
            f"{self.verdict()}{extra}"
        )


@dataclass(frozen=True)
class CheckReport:
    """The budgets of one check run, in the order they were asked for."""

    model: str
    pipeline: str
    results: tuple[BudgetResult, ...]
    seconds: float = 0.0
    error: str | None = None  # the run itself failed (a pass, the model, a build): nothing was measured

    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)

    @property
    def broken(self) -> list[BudgetResult]:
        return [r for r in self.results if not r.passed]

    def table(self) -> str:
        """The readable diff: one row per budget (budget, measured, verdict), then a summary line."""
        rows = [("budget", "limit", "measured", "result")]
        for r in self.results:
            rows.append((r.name, r.budget_text(), f"{_num(r.measured)}{r.unit}", r.verdict()))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
        lines += [f"  {r.name}: {r.detail}" for r in self.results if r.detail]
        if not self.results:
            lines.append("no budgets given: the pipeline ran, nothing was measured")
        elif self.passed:
            lines.append(f"{len(self.results)} of {len(self.results)} budgets kept")
        else:
            lines.append(f"{len(self.broken)} of {len(self.results)} budgets broken")
        return "\n".join(lines)

    def failure_message(self) -> str:
        """What broke, one budget a line (empty when everything was kept)."""
        head = f"pipeline '{self.pipeline}' on {self.model} broke {len(self.broken)} of {len(self.results)} budgets:"
        return "\n".join([head, *(f"  {r.line()}" for r in self.broken)]) if self.broken else ""

    def junit_xml(self) -> str:
        """JUnit XML: one testsuite, one testcase per budget (a failure element when broken); a run that
        failed is one testcase 'pipeline' with an error element."""
        suite = ET.Element(
            "testsuite",
            name="graphopt check",
            tests=str(len(self.results) or int(self.error is not None)),
            failures=str(len(self.broken)),
            errors=str(int(self.error is not None)),
            skipped="0",
            time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for key, value in (("model", self.model), ("pipeline", self.pipeline)):
            ET.SubElement(props, "property", name=key, value=value)
        classname = f"graphopt.check.{os.path.basename(self.model) or self.model}"
        if self.error is not None:
            case = ET.SubElement(suite, "testcase", classname=classname, name="pipeline", time=f"{self.seconds:.3f}")
            error = ET.SubElement(case, "error", message=self.error.splitlines()[0], type="CheckError")
            error.text = self.error
        for r in self.results:
            case = ET.SubElement(suite, "testcase", classname=classname, name=r.name, time=f"{r.seconds:.3f}")
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=r.line(), type="BudgetBroken")
                failure.text = r.line()
            out = ET.SubElement(case, "system-out")
            out.text = r.line()
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def write_junit(self, path: str | os.PathLike) -> os.PathLike:
        """Write `junit_xml()` to `path` atomically."""
        from graphopt.fileio import atomic_write_text

        return atomic_write_text(path, self.junit_xml())


def check_model(
    model,
    pipeline: "str | Pipeline | None",
    *,
    min_sqnr_db: float | None = None,
    max_abs_diff: float | None = None,
    max_accuracy_drop: float | None = None,
    accuracy: str | None = None,
    max_latency_ms: float | None = None,
    target: Any = None,
    inputs: Iterable[Sequence[np.ndarray]] | None = None,
    samples: int = 4,
    seed: int = 0,
    example_inputs: Sequence | None = None,
    calibration: Iterable[Sequence[np.ndarray]] | None = None,
    verify: bool = True,
    name: str | None = None,
    log: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run `pipeline` on `model` (nn.Module with `example_inputs`, ONNX path or proto, or Graph) and
    measure the budgets given. Options are checked before any work; see the module docstring."""
    from graphopt.api import import_model, run_pipeline_on
    from graphopt.defaults import pipeline_text
    from graphopt.passes import Pipeline

    check_options(min_sqnr_db, max_abs_diff, max_accuracy_drop, accuracy, max_latency_ms, target, samples)
    pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline_text(pipeline))
    say = log or (lambda message: None)
    start = time.perf_counter()
    original = import_model(model, example_inputs)
    optimized, _ = run_pipeline_on(
        original, pipe, example_inputs=example_inputs, verify=verify, log=log, calibration=calibration, notice=notice
    )
    results: list[BudgetResult] = []
    if min_sqnr_db is not None or max_abs_diff is not None:
        t0 = time.perf_counter()
        sets = (
            [list(s) for s in inputs] if inputs is not None else _seeded_sets(original, example_inputs, seed, samples)
        )
        say(f"comparing outputs on {len(sets)} input sets")
        sqnr, diff, where = output_differences(original, optimized, sets)
        took = time.perf_counter() - t0
        if min_sqnr_db is not None:
            results.append(BudgetResult("min-sqnr", "SQNR", min_sqnr_db, sqnr, " dB", True, where["sqnr"], took))
        if max_abs_diff is not None:
            results.append(
                BudgetResult("max-abs-diff", "max |diff|", max_abs_diff, diff, "", False, where["diff"], took)
            )
    if max_accuracy_drop is not None:
        t0 = time.perf_counter()
        say(f"measuring {accuracy} accuracy of the original and the optimized model")
        before, after = digits_accuracy(original), digits_accuracy(optimized)
        drop = 100.0 * (before - after)
        detail = f"{accuracy} top-1 {100 * before:.2f}% -> {100 * after:.2f}%"
        results.append(
            BudgetResult(
                "max-accuracy-drop", "accuracy drop", max_accuracy_drop, drop, " pts", False, detail, _since(t0)
            )
        )
    if max_latency_ms is not None:
        t0 = time.perf_counter()
        say(f"building the optimized model for {target} and timing it")
        ms, runs = measure_latency_ms(optimized, target)
        detail = f"median of {runs} runs on this machine, built for {target}"
        results.append(BudgetResult("max-latency", "latency", max_latency_ms, ms, " ms", False, detail, _since(t0)))
    label = name or _model_label(model, original)
    return CheckReport(label, str(pipe), tuple(results), time.perf_counter() - start)


def output_differences(
    original: "Graph", optimized: "Graph", sets: Sequence[Sequence[np.ndarray]]
) -> tuple[float, float, dict[str, str]]:
    """(worst SQNR over the outputs in dB, largest |diff|, where each was found) on the input sets."""
    from graphopt.passes.base import sqnr_db

    if not sets:
        raise GraphoptError("no input sets to compare the outputs on")
    before = [[np.asarray(o, np.float64) for o in original.run(list(s))] for s in sets]
    after = [[np.asarray(o, np.float64) for o in optimized.run(list(s))] for s in sets]
    names = original.outputs
    worst_sqnr, worst_diff = math.inf, 0.0
    where = {"sqnr": "", "diff": ""}
    for i, name in enumerate(names):
        ref = np.concatenate([b[i].ravel() for b in before])
        new = np.concatenate([a[i].ravel() for a in after])
        if ref.shape != new.shape:
            raise GraphoptError(f"output '{name}' changed size from {ref.size} to {new.size} elements")
        s = sqnr_db(ref, new)
        if s < worst_sqnr or not where["sqnr"]:
            worst_sqnr, where["sqnr"] = s, f"worst output '{name}'"
        with np.errstate(invalid="ignore"):
            err = np.nan_to_num(np.abs(new - ref), nan=np.inf)
        err[(ref == new) | (np.isnan(ref) & np.isnan(new))] = 0.0
        if err.size and float(err.max()) >= worst_diff:
            worst_diff = float(err.max())
            where["diff"] = f"output '{name}' element {int(err.argmax())} of {err.size} ({len(sets)} input sets)"
    return worst_sqnr, worst_diff, where


def digits_accuracy(graph: "Graph") -> float:
    """Top-1 accuracy of `graph` on the digits test split, images reshaped to its input."""
    import torch

    from graphopt.models.digits import load_digits_data

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise GraphoptError(
            f"--accuracy digits needs a model with one input and one output, got {len(graph.inputs)} and "
            f"{len(graph.outputs)}"
        )
    name = graph.inputs[0]
    shape = [d if isinstance(d, int) else None for d in graph.type_of(name).shape]
    features = shape[1:]
    if not shape or None in features or int(np.prod(features)) != 64:
        raise GraphoptError(
            f"--accuracy digits: input '{name}' has shape {list(graph.type_of(name).shape)}; a digits model takes "
            f"[N, 64] or [N, 1, 8, 8] (8x8 images)"
        )
    data = load_digits_data()
    x = data.x_test.numpy().reshape(-1, *features).astype(graph.type_of(name).dtype)
    y = data.y_test.numpy()
    batch = shape[0] or len(x)
    correct = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small batches: one thread is faster and steadier on a busy machine
    try:
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            n = len(chunk)
            if n < batch:  # a fixed batch dimension: pad the last chunk, score only the real rows
                chunk = np.concatenate([chunk, np.zeros((batch - n, *features), chunk.dtype)])
            logits = np.asarray(graph.run([chunk])[0]).reshape(batch, -1)[:n]
            correct += int((logits.argmax(1) == y[i : i + n]).sum())
    finally:
        torch.set_num_threads(threads)
    return correct / len(x)


def measure_latency_ms(graph: "Graph", target: Any, *, warmup: int = 3, min_runs: int = 10, budget_s: float = 2.0):
    """(median latency in ms, runs) of `graph` built by TVM for `target` and run here on seeded inputs."""
    from graphopt.analysis.inputs import sample_inputs
    from graphopt.backends.tvm.compiled import compile_graph

    compiled = compile_graph(graph, target)
    if compiled.is_cross:
        raise GraphoptError(
            f"--max-latency-ms: target '{target}' does not run on this machine; time it on the device "
            f"(graphopt compile, then CompiledModel.run_remote) or give a target this machine runs (x86)"
        )
    feeds = sample_inputs(graph, 0)
    for _ in range(warmup):
        compiled(*feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 1000):
        t0 = time.perf_counter()
        compiled(*feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), len(times)


def check_options(min_sqnr_db, max_abs_diff, max_accuracy_drop, accuracy, max_latency_ms, target, samples) -> None:
    """GraphoptError naming the option when budgets and their companions do not fit together."""
    if max_accuracy_drop is not None and accuracy is None:
        raise GraphoptError(f"--max-accuracy-drop needs --accuracy DATASET (one of {', '.join(ACCURACY_DATASETS)})")
    if accuracy is not None and accuracy not in ACCURACY_DATASETS:
        raise GraphoptError(f"--accuracy: unknown dataset '{accuracy}'; known: {', '.join(ACCURACY_DATASETS)}")
    if accuracy is not None and max_accuracy_drop is None:
        raise GraphoptError("--accuracy DATASET is measured against --max-accuracy-drop POINTS; give both")
    if max_latency_ms is not None and target is None:
        raise GraphoptError("--max-latency-ms needs --target (e.g. x86): latency is measured on a TVM build")
    if target is not None:
        from graphopt.backends.tvm.targets import resolve_target

        resolve_target(target)  # an unknown target fails before any work
    for option, value in (
        ("--min-sqnr", min_sqnr_db),
        ("--max-abs-diff", max_abs_diff),
        ("--max-accuracy-drop", max_accuracy_drop),
        ("--max-latency-ms", max_latency_ms),
    ):
        if value is not None and not math.isfinite(value):
            raise GraphoptError(f"{option} must be a finite number, got {value}")
    for option, value in (("--max-abs-diff", max_abs_diff), ("--max-latency-ms", max_latency_ms)):
        if value is not None and value < 0:
            raise GraphoptError(f"{option} must be >= 0, got {value}")
    if samples < 1:
        raise GraphoptError(f"samples must be >= 1, got {samples}")


def _seeded_sets(graph: "Graph", example_inputs, seed: int, samples: int) -> list[list[np.ndarray]]:
    from graphopt.analysis.inputs import sample_inputs
    from graphopt.backends.torch import to_tensor

    sets = [sample_inputs(graph, seed + i) for i in range(samples)]
    if example_inputs is not None:
        xs = example_inputs if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
        sets.insert(0, [to_tensor(x).detach().numpy() for x in xs])
    return sets


def _model_label(model, graph: "Graph") -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return graph.name or type(model).__name__


def _since(t0: float) -> float:
    return time.perf_counter() - t0


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x != 0 and abs(x) < 0.01:
        return f"{x:.3g}"
    return f"{x:.2f}".rstrip("0").rstrip(".")
