"""Shrink a model to a minimal graph on which a pipeline still fails the same way (`graphopt reduce`).

    result = reduce_model(graph, "fold-bn,quantize", mode="crash")   # or mode="mismatch", target="x86"
    result.graph.save_onnx("min.onnx")

A *failure* is what one run of the pipeline (then, with a target, the TVM build) does to
a candidate graph:
- mode "crash": it raises. Its kind is the exception type, the pass it names and the
  exception that pass raised; a candidate must fail with the same kind.
- mode "mismatch": it runs, and the result's outputs differ from the candidate's own on
  seeded inputs by more than `atol + rtol * max|reference|` (compiled for `target` when
  one is given, else through `graph.run`).
Passes run without the numerical verifier (the structural one stays), so a mismatch
is judged once, on the whole pipeline.

Candidates are subgraphs cut out of the model (`tools/subgraph.extract`: values whose
producer is dropped become graph inputs, values nobody reads any more graph outputs).
Delta debugging (Zeller's ddmin) over the nodes in topological order, in contiguous
chunks, finds a subgraph from which no single node can be dropped without losing the
failure, within `max_tests` runs. The caller's graph is never modified.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphopt.analysis.inputs import sample_inputs
from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.passes import PassContext, Pipeline
from graphopt.tools.subgraph import extract

__all__ = ["Failure", "ReduceError", "ReduceResult", "find_failure", "reduce_model"]

Mode = Literal["crash", "mismatch"]
MODES: tuple[str, ...] = ("crash", "mismatch")


class ReduceError(GraphoptError):
    """The model cannot be reduced: the pipeline does not fail on it, or an option is invalid."""


@dataclass(frozen=True)
class Failure:
    """How a pipeline failed on a graph: `kind` is what a reduced graph must reproduce."""

    kind: tuple[str | None, ...]
    message: str


@dataclass(frozen=True)
class ReduceResult:
    graph: Graph  # the minimal failing graph
    failure: Failure  # its failure (same kind as the original's)
    original_failure: Failure
    nodes_before: int
    nodes_after: int
    tests: int  # pipeline runs made
    seconds: float

    def summary(self) -> str:
        kept = ", ".join(
            f"{n.name} ({n.op if not n.is_opaque else n.attrs.get('op_type', 'opaque')})" for n in self.graph.nodes
        )
        return (
            f"failure: {self.failure.message}\n"
            f"nodes: {self.nodes_before} -> {self.nodes_after} ({self.tests} pipeline runs, {self.seconds:.1f} s)\n"
            f"kept: {kept}"
        )


def _pass_named(message: str) -> str | None:
    m = re.match(r"pass '([^']+)'", message)
    return m.group(1) if m else None


def _crash(e: Exception) -> Failure:
    cause = e.__cause__
    kind = (type(e).__name__, _pass_named(str(e)), type(cause).__name__ if cause is not None else None)
    return Failure(kind, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _outputs(graph: Graph, inputs: list[np.ndarray], target) -> list[np.ndarray]:
    if target is None:
        return [np.asarray(o) for o in graph.run(inputs)]
    from graphopt.backends.tvm.compiled import compile_graph

    out = compile_graph(graph, target)(*inputs)
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def _build(graph: Graph, target) -> None:
    from graphopt.backends.tvm.compiled import compile_graph

    compile_graph(graph, target)


def _mismatch(names: Sequence[str], want: list[np.ndarray], got: list[np.ndarray], atol, rtol) -> Failure | None:
    """The first output that differs beyond atol + rtol * max|want| (NaN matches NaN, inf the same inf)."""
    if len(want) != len(got):
        return Failure(("mismatch",), f"mismatch: {len(got)} outputs instead of {len(want)}")
    for name, a, b in zip(names, want, got):
        if a.shape != b.shape:
            return Failure(("mismatch",), f"mismatch: output '{name}' has shape {list(b.shape)}, not {list(a.shape)}")
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        finite = np.isfinite(a64) & np.isfinite(b64)
        bound = atol + rtol * float(np.max(np.abs(a64[finite]), initial=0.0))
        with np.errstate(invalid="ignore"):
            same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64)) | (finite & (np.abs(a64 - b64) <= bound))
        if not same.all():
            diff = float(np.max(np.abs(a64[finite] - b64[finite]), initial=0.0))
            special = int((~same & ~finite).sum())
            extra = f", {special} NaN/inf entries differ" if special else ""
            return Failure(
                ("mismatch",),
                f"mismatch: output '{name}' differs by max abs {diff:.3g} (tolerance {bound:.3g}){extra}",
            )
    return None


def find_failure(
    graph: Graph,
    pipeline: Pipeline,
    *,
    mode: Mode = "crash",
    target=None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> Failure | None:
    """How `pipeline` (then a build for `target`) fails on `graph` in `mode`, or None when it does not."""
    ctx = PassContext(seed=seed)
    if mode == "crash":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = pipeline.run(graph, ctx).graph
                if target is not None:
                    _build(out, target)
        except Exception as e:
            return _crash(e)
        return None
    try:  # the candidate itself must run; if it cannot, it shows nothing about the pipeline
        inputs = sample_inputs(graph, seed)
        want = [np.asarray(o) for o in graph.run(inputs)]
    except Exception:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _outputs(pipeline.run(graph, ctx).graph, inputs, target)
    except Exception:
        return None  # a crash is another kind of failure
    return _mismatch(graph.outputs, want, got, atol, rtol)


def _chunks(items: list[str], n: int) -> list[list[str]]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]


def reduce_model(
    graph: Graph,
    pipeline: str | Pipeline,
    *,
    mode: Mode = "crash",
    target=None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
    max_tests: int = 300,
    log: Callable[[str], None] | None = None,
) -> ReduceResult:
    """A minimal subgraph of `graph` on which `pipeline` fails as it does on `graph`; ReduceError if it does not."""
    if mode not in MODES:
        raise ReduceError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline)
    start = time.perf_counter()
    check = dict(mode=mode, target=target, atol=atol, rtol=rtol, seed=seed)
    original = find_failure(graph, pipe, **check)
    if original is None:
        what = "raise" if mode == "crash" else f"change the outputs beyond atol={atol:g} rtol={rtol:g}"
        on = f" or the build for {target}" if target is not None and mode == "crash" else ""
        raise ReduceError(
            f"pipeline '{pipe}'{on} does not {what} on graph '{graph.name}' ({len(graph.nodes)} nodes): "
            f"nothing to reduce (mode {mode}{'; try --mode mismatch' if mode == 'crash' else ''})"
        )
    if log:
        log(f"original: {len(graph.nodes)} nodes, {original.message}")
    cache: dict[frozenset[str], tuple[Graph, Failure] | None] = {}
    tests = 0

    def fails(keep: list[str]) -> bool:
        nonlocal tests
        key = frozenset(keep)
        if key not in cache:
            cache[key] = None
            sub = extract(graph, key) if tests < max_tests else None
            if sub is not None:
                tests += 1
                failure = find_failure(sub, pipe, **check)
                if failure is not None and failure.kind == original.kind:
                    cache[key] = (sub, failure)
                    if log:
                        log(f"run {tests}: {len(keep)} nodes still fail")
        return cache[key] is not None

    items = [n.name for n in graph.nodes]
    n = 2
    while len(items) >= 2 and tests < max_tests:
        chunks = _chunks(items, n)
        smaller = next((c for c in chunks if len(c) < len(items) and fails(c)), None)
        if smaller is not None:
            items, n = smaller, 2
            continue
        complement = next(
            (r for c in chunks if len(r := [i for i in items if i not in set(c)]) < len(items) and fails(r)), None
        )
        if complement is not None:
            items, n = complement, max(n - 1, 2)
            continue
        if n >= len(items):
            break
        n = min(len(items), 2 * n)
    found = cache.get(frozenset(items))
    sub, failure = found if found is not None else (graph.copy(), original)
    return ReduceResult(
        graph=sub,
        failure=failure,
        original_failure=original,
        nodes_before=len(graph.nodes),
        nodes_after=len(sub.nodes),
        tests=tests,
        seconds=time.perf_counter() - start,
    )
