"""PassContext: what a pipeline run carries besides the graph."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes.base import Pass
    from graphopt.passes.instruments import Instrument


@dataclass
class PassContext:
    """Instruments, seeds and example data for one pipeline run.

    instruments: run around every pass (see `graphopt.passes.instruments`).
    inputs: example input sets (each in `graph.inputs` order) for the numerical
        verifier; seeded random inputs are used when None.
    calibration: input sets that calibrating passes (quantize, correct-bias)
        observe; kept apart from `inputs` so a pass is never verified on the data it
        was fitted to. `calibration_sets` falls back to seeded random inputs.
    reference: the float graph a quantized graph came from (the graph right before
        `quantize`); correct-bias and round-adaptive compare against its layers.
    evaluation: scores a graph, higher is better (accuracy on a labelled set, a
        cosine to the float outputs); passes with an accuracy budget
        (mixed-precision) read it and refuse without one.
    log: receives one progress line per pass (e.g. `print`); None is silent.
    history: the passes run so far in the current pipeline (set by the manager).
    """

    instruments: list["Instrument"] = field(default_factory=list)
    seed: int = 0
    verify_structure: bool = True
    inputs: Sequence[Sequence[np.ndarray]] | None = None
    calibration: Iterable[Sequence[np.ndarray]] | None = None
    reference: "Graph | None" = None
    log: Callable[[str], None] | None = None
    history: list["Pass"] = field(default_factory=list)
    evaluation: "Callable[[Graph], float] | None" = None

    def calibration_sets(self, graph: "Graph | None" = None, count: int = 8) -> Iterator[list[np.ndarray]]:
        """The calibration input sets; without any, `count` seeded random sets for `graph`."""
        if self.calibration is not None:
            for inputs in self.calibration:
                yield list(inputs)
            return
        if graph is None:
            raise ValueError("no calibration data was given and no graph to draw random inputs for")
        from graphopt.analysis.inputs import sample_inputs

        for i in range(count):
            yield sample_inputs(graph, self.seed + 10_000 + i)  # disjoint from the verifier's seeds

    def predecessors(self) -> str:
        """'passes before it: a, b' (or 'it was the first pass') for error messages."""
        if not self.history:
            return "it was the first pass"
        return "passes before it: " + ", ".join(str(p) for p in self.history)

    def instrument(self, kind: type) -> "Instrument | None":
        return next((i for i in self.instruments if isinstance(i, kind)), None)
