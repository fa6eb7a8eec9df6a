"""Pass, PassResult, Tolerance: what every rewrite pass is and promises.

A pass is a registered frozen dataclass: its kebab-case `name` is its name in
pipeline text and its typed fields are its options. `run` edits the graph it is
given (the pipeline copied the user's graph on entry) and returns it in a
`PassResult`. `tolerance()` states how closely the pass preserves outputs; the
numerical verifier holds it to that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from graphopt.ir.graph import Graph

if TYPE_CHECKING:
    from graphopt.passes.context import PassContext


@dataclass(frozen=True)
class Tolerance:
    """Allowed output change. Exact passes use atol/rtol; lossy ones add a bound.

    min_sqnr_db: signal-to-noise ratio of new vs old outputs, in dB.
    min_top1_agreement: fraction of rows whose argmax over the last axis agrees.

    Non-finite values: NaN matches NaN and inf matches inf of the same sign, in every
    check; any other difference at a non-finite position is a violation (SQNR -inf).
    Top-1 takes a row's first NaN as its maximum, as torch.argmax does.
    """

    atol: float | None = 1e-5
    rtol: float = 1e-5
    min_sqnr_db: float | None = None
    min_top1_agreement: float | None = None

    @classmethod
    def exact(cls, atol: float = 1e-5, rtol: float = 1e-5) -> "Tolerance":
        return cls(atol=atol, rtol=rtol)

    @classmethod
    def bounded(cls, *, min_sqnr_db: float | None = None, min_top1_agreement: float | None = None) -> "Tolerance":
        return cls(atol=None, min_sqnr_db=min_sqnr_db, min_top1_agreement=min_top1_agreement)

    def describe(self) -> str:
        parts = []
        if self.atol is not None:
            parts.append(f"atol={self.atol:g} rtol={self.rtol:g}")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR>={self.min_sqnr_db:g} dB")
        if self.min_top1_agreement is not None:
            parts.append(f"top-1 agreement>={self.min_top1_agreement:g}")
        return ", ".join(parts) or "unchecked"

    def violations(self, before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> list[str]:
        """Human-readable reasons `after` is out of bounds of `before`; [] when within."""
        if len(before) != len(after):
            return [f"output count changed from {len(before)} to {len(after)}"]
        found = []
        for i, (a, b) in enumerate(zip(before, after)):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                found.append(f"output {i}: shape changed from {a.shape} to {b.shape}")
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            close = (
                np.isclose(b64, a64, atol=self.atol, rtol=self.rtol, equal_nan=True) if self.atol is not None else None
            )
            if close is not None and not close.all():
                with np.errstate(invalid="ignore"):  # inf - inf
                    err = np.where(close, 0.0, np.nan_to_num(np.abs(b64 - a64), nan=np.inf))
                at = np.unravel_index(err.argmax(), err.shape)
                found.append(
                    f"output {i}: max abs error {err.max():.3g} at index "
                    f"{tuple(int(j) for j in at)} ({a64[at]:g} became {b64[at]:g}) exceeds "
                    f"atol={self.atol:g} rtol={self.rtol:g}; {int((~close).sum())} of "
                    f"{close.size} values differ"
                )
            if self.min_sqnr_db is not None:
                sqnr = sqnr_db(a64, b64)
                if sqnr < self.min_sqnr_db:
                    found.append(f"output {i}: SQNR {sqnr:.2f} dB < {self.min_sqnr_db:g} dB")
            if self.min_top1_agreement is not None and a.ndim >= 1:
                agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
                if agree < self.min_top1_agreement:
                    found.append(f"output {i}: top-1 agreement {agree:.3f} < {self.min_top1_agreement:g}")
        return found


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """SQNR over the finite positions; -inf when a non-finite value is not matched exactly."""
    reference, approx = np.asarray(reference, np.float64), np.asarray(approx, np.float64)
    finite = np.isfinite(reference) & np.isfinite(approx)
    same = (np.isnan(reference) & np.isnan(approx)) | (np.isinf(reference) & (reference == approx))
    if not np.all(finite | same):
        return float("-inf")
    reference, approx = reference[finite], approx[finite]
    noise = float(np.sum((reference - approx) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses are `@register_pass @dataclass(frozen=True)`."""

    name: ClassVar[str] = ""

    def run(self, graph: Graph, ctx: "PassContext") -> PassResult:
        raise NotImplementedError(f"pass '{self.name}' does not implement run()")

    def tolerance(self) -> Tolerance:
        """How much this pass may change outputs; exact unless a lossy pass says otherwise."""
        return Tolerance.exact()

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        from graphopt.passes.pipeline import format_pass

        return format_pass(self)
