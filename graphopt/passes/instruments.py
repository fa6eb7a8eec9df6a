"""Instruments run around every pass: timing, IR dumps, statistics, numerical verification.

Hooks run in list order before a pass and in reverse order after it, so an
instrument listed last measures the pass alone (`default_instruments` puts
timing last).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.analysis.inputs import sample_inputs
from graphopt.errors import GraphoptError, NumericalMismatchError, PassError
from graphopt.fileio import atomic_write_text

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes.base import Pass, PassResult
    from graphopt.passes.context import PassContext


class Instrument:
    def enter_pipeline(self, graph: "Graph", ctx: "PassContext") -> None: ...
    def before_pass(self, pass_: "Pass", graph: "Graph", ctx: "PassContext") -> None: ...
    def after_pass(self, pass_: "Pass", graph: "Graph", result: "PassResult", ctx: "PassContext") -> None: ...
    def exit_pipeline(self, graph: "Graph", ctx: "PassContext") -> None: ...


@dataclass
class Timing(Instrument):
    """Wall time of each pass, in seconds: `records` = [(pass text, seconds)]."""

    records: list[tuple[str, float]] = field(default_factory=list)
    _start: float = 0.0

    def before_pass(self, pass_, graph, ctx):
        self._start = time.perf_counter()

    def after_pass(self, pass_, graph, result, ctx):
        self.records.append((str(pass_), time.perf_counter() - self._start))


@dataclass
class Statistics(Instrument):
    """Each pass's own stats plus node and parameter counts before and after."""

    records: list[dict[str, Any]] = field(default_factory=list)
    _before: tuple[int, int] = (0, 0)

    def before_pass(self, pass_, graph, ctx):
        self._before = (len(graph.nodes), graph.num_parameters())

    def after_pass(self, pass_, graph, result, ctx):
        self.records.append(
            {
                "pass": str(pass_),
                "changed": result.changed,
                **result.stats,
                "nodes": f"{self._before[0]}->{len(graph.nodes)}",
                "parameters": f"{self._before[1]}->{graph.num_parameters()}",
            }
        )


@dataclass
class IRDump(Instrument):
    """Write the printed IR before and after each pass into `directory` (atomically)."""

    directory: Path
    _index: int = 0

    def __post_init__(self):
        self.directory = Path(self.directory)

    def _write(self, label: str, graph: "Graph") -> None:
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
        atomic_write_text(self.directory / f"{self._index:02d}-{slug}.mlir.txt", str(graph) + "\n")

    def enter_pipeline(self, graph, ctx):
        self._index = 0
        self._write("input", graph)

    def before_pass(self, pass_, graph, ctx):
        self._index += 1
        self._write(f"{pass_.name}-before", graph)

    def after_pass(self, pass_, graph, result, ctx):
        self._write(f"{pass_.name}-after", graph)


@dataclass
class NumericalVerifier(Instrument):
    """Run the graph before and after each pass on the same inputs; enforce the pass's tolerance.

    Uses `ctx.inputs` when given, else `num_samples` seeded random input sets.
    A violation raises NumericalMismatchError naming the pass, its options and
    the passes before it.
    """

    num_samples: int = 2
    checked: list[str] = field(default_factory=list)
    _reference: list[list[np.ndarray]] = field(default_factory=list)
    _inputs: list[list[np.ndarray]] = field(default_factory=list)

    def enter_pipeline(self, graph, ctx):
        if ctx.inputs is not None:
            self._inputs = [list(s) for s in ctx.inputs]
        else:
            self._inputs = [sample_inputs(graph, ctx.seed + i) for i in range(self.num_samples)]

    def before_pass(self, pass_, graph, ctx):
        self._reference = [_run_for(graph, x, k, f"before pass '{pass_}'", ctx) for k, x in enumerate(self._inputs)]

    def after_pass(self, pass_, graph, result, ctx):
        if not result.changed:
            return
        tol = pass_.tolerance()
        for k, (x, ref) in enumerate(zip(self._inputs, self._reference)):
            problems = tol.violations(ref, _run_for(graph, x, k, f"after pass '{pass_}'", ctx))
            if problems:
                raise NumericalMismatchError(
                    f"pass '{pass_}' changed the model's outputs beyond its tolerance "
                    f"({tol.describe()}) on input set {k}: {'; '.join(problems)}; {ctx.predecessors()}"
                )
        self.checked.append(str(pass_))


def _run_for(graph: "Graph", inputs, k: int, when: str, ctx: "PassContext") -> list[np.ndarray]:
    """graph.run for the verifier: a model that cannot run on its check inputs is one clear error."""
    try:
        return graph.run(inputs)
    except GraphoptError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PassError(
            f"the numerical verifier could not run the model {when} on input set {k} "
            f"({type(e).__name__}: {first}); give check inputs from the model's domain "
            f"(PassContext(inputs=...)) or turn the verifier off; {ctx.predecessors()}"
        ) from e


def default_instruments(*, verify: bool = True, dump_dir: str | Path | None = None) -> list[Instrument]:
    insts: list[Instrument] = [Statistics()]
    if verify:
        insts.append(NumericalVerifier())
    if dump_dir is not None:
        insts.append(IRDump(Path(dump_dir)))
    insts.append(Timing())
    return insts
