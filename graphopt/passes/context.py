"""PassContext: what a pipeline run carries besides the graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from graphopt.passes.base import Pass
    from graphopt.passes.instruments import Instrument


@dataclass
class PassContext:
    """Instruments, seeds and example data for one pipeline run.

    instruments: run around every pass (see `graphopt.passes.instruments`).
    inputs: example input sets (each in `graph.inputs` order) for verification and,
        later, calibration; seeded random inputs are used when None.
    log: receives one progress line per pass (e.g. `print`); None is silent.
    history: the passes run so far in the current pipeline (set by the manager).
    """

    instruments: list["Instrument"] = field(default_factory=list)
    seed: int = 0
    verify_structure: bool = True
    inputs: Sequence[Sequence[np.ndarray]] | None = None
    log: Callable[[str], None] | None = None
    history: list["Pass"] = field(default_factory=list)

    def predecessors(self) -> str:
        """'passes before it: a, b' (or 'it was the first pass') for error messages."""
        if not self.history:
            return "it was the first pass"
        return "passes before it: " + ", ".join(str(p) for p in self.history)

    def instrument(self, kind: type) -> "Instrument | None":
        return next((i for i in self.instruments if isinstance(i, kind)), None)
