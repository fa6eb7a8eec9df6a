"""Structured pruning: the options and the run shared by prune-channels, prune-heads and prune-ffn.

A pass picks the dependency groups of its kinds (`analysis.dependency`),
scores their units (`analysis.importance`), chooses which to remove (`scope`:
the same `ratio` in every group, or one global ranking of units normalised
per group), rounds the widths it keeps to `round_to`, and cuts them all at
once (`prune_apply`). Groups that are unsafe, ignored or too small are left
whole and listed in the stats with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from graphopt.analysis.cost import graph_cost
from graphopt.analysis.dependency import Group, dependency_groups
from graphopt.analysis.importance import CRITERIA, gradients, unit_importance
from graphopt.errors import PassError
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.prune_apply import keep_count, prune_units

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes.context import PassContext

Importance = Literal["l1", "l2", "bn-scale", "taylor", "random"]

OPTIONS_DOC = """
    Options: `ratio` of each group's units to remove, in [0, 1) (with
    scope=global: of all units, ranked together after normalising each group's
    scores by their mean); `importance` l1 | l2 | bn-scale | taylor (gradients
    on `samples` calibration batches) | random; `round-to` keeps widths
    multiples of it (8 or 16 for vector kernels); `ignore` names nodes whose
    output channels stay or parameters never sliced. Groups left whole are
    counted in the stats and logged with the reason.
"""


@dataclass(frozen=True)
class StructuredPrune(Pass):
    """Base of the structured pruning passes; subclasses name the group kinds they prune."""

    kinds: ClassVar[tuple[str, ...]] = ()
    unit_word: ClassVar[str] = "channels"

    ratio: float = 0.5
    importance: Importance = "l1"
    scope: Literal["layer", "global"] = "layer"
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    samples: int = 8  # calibration batches for taylor

    def __post_init__(self):
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"{self.name}: ratio must lie in [0, 1), got {self.ratio}")
        if self.importance not in CRITERIA:
            raise ValueError(f"{self.name}: unknown importance '{self.importance}'; known: {', '.join(CRITERIA)}")
        if self.round_to < 1:
            raise ValueError(f"{self.name}: round_to must be >= 1, got {self.round_to}")
        if self.samples < 1:
            raise ValueError(f"{self.name}: samples must be >= 1, got {self.samples}")

    def tolerance(self) -> Tolerance:
        return Tolerance.bounded()  # lossy by design: shapes are checked, values are fine-tuning's job

    def run(self, graph: "Graph", ctx: "PassContext") -> PassResult:
        self._check_ignore(graph)
        before = graph_cost(graph)
        chosen, skipped = self._candidates(graph)
        stats: dict[str, Any] = {"groups": 0, self.unit_word: "0/0"}
        if self.ratio == 0.0 or not chosen:
            if not chosen:
                why = _first_reasons(skipped) if skipped else f"the graph has no {' or '.join(self.kinds)} group"
                stats["reason"] = f"no prunable group ({why})"
            stats["skipped"] = len(skipped)
            _log_skipped(ctx, self, skipped)
            return PassResult(graph, False, stats)
        grads = None
        if self.importance == "taylor":
            try:
                grads = gradients(graph, _take(ctx.calibration_sets(graph, self.samples), self.samples))
            except ValueError as e:
                raise PassError(f"{self}: {e}") from None
        scores, used = {}, set()
        for g in chosen:
            scores[g], criterion = unit_importance(graph, g, self.importance, grads=grads, seed=ctx.seed)
            used.add(criterion)
        removals = self._select(chosen, scores, {g: self._step(graph, g) for g in chosen})
        removals = {g: _never_empty(g, r, scores[g]) for g, r in removals.items()}
        removals = {g: r for g, r in removals.items() if r}
        if removals:
            try:
                prune_units(graph, removals)
            except Exception as e:
                raise PassError(f"{self.name} could not cut its groups: {e}") from e
        after = graph_cost(graph)
        total = sum(g.units for g in chosen)
        removed = sum(len(r) for r in removals.values())
        stats = {
            "groups": len(removals),
            self.unit_word: f"{total - removed}/{total}",
            "params": f"{before.params}->{after.params}",
            "macs": f"{before.macs}->{after.macs}",
            "skipped": len(skipped),
        }
        if used != {self.importance}:
            stats["importance"] = ",".join(sorted(used))
        _log_skipped(ctx, self, skipped)
        return PassResult(graph, bool(removals), stats)

    # ---- choosing ------------------------------------------------------------------
    def _check_ignore(self, graph: "Graph") -> None:
        for name in self.ignore:
            if not (graph.has_node(name) or name in graph.params):
                raise PassError(f"{self}: ignore names '{name}', which is neither a node nor a parameter of the graph")

    def _candidates(self, graph: "Graph") -> tuple[list[Group], list[tuple[Group, str]]]:
        chosen, skipped = [], []
        ignored = set(self.ignore)
        for g in dependency_groups(graph):
            if g.kind not in self.kinds:
                continue
            if not g.prunable:
                skipped.append((g, g.reason))
            elif ignored & _touches(graph, g):
                skipped.append((g, f"ignored ({', '.join(sorted(ignored & _touches(graph, g)))})"))
            elif keep_count(g.units, self.ratio, self._step(graph, g)) >= g.units:
                why = f"{g.units} units: nothing to remove at ratio {self.ratio:g}, round-to {self.round_to}"
                skipped.append((g, why))
            else:
                chosen.append(g)
        return chosen, skipped

    def _step(self, graph: "Graph", g: Group) -> int:
        """Units per `round_to` step: `round_to` counts channels (or heads), and a unit may span several channels."""
        if self.round_to == 1:
            return 1
        width = _unit_width(graph, g) if self.unit_word == "channels" else 1
        return self.round_to // math.gcd(self.round_to, width)

    def _select(
        self, groups: list[Group], scores: dict[Group, np.ndarray], steps: dict[Group, int]
    ) -> dict[Group, list[int]]:
        if self.scope == "layer":
            return {g: _lowest(scores[g], g.units - keep_count(g.units, self.ratio, steps[g])) for g in groups}
        normed = {g: s / (s.mean() if s.mean() > 0 else 1.0) for g, s in scores.items()}
        pool = np.concatenate([normed[g] for g in groups])
        n_remove = int(np.floor(pool.size * self.ratio + 1e-9))
        threshold = np.sort(pool)[n_remove - 1] if n_remove else -np.inf
        out = {}
        for g in groups:
            below = int((normed[g] <= threshold).sum())
            keep = keep_count(g.units, below / g.units, steps[g])
            out[g] = _lowest(normed[g], g.units - keep)
        return out


def _never_empty(g: Group, removed: list[int], scores: np.ndarray) -> list[int]:
    """`removed` less the best-scored units needed so that no tensor of the group loses a whole axis.

    A unit may own every coordinate of one tensor (a split output of one channel): removing it
    would leave an empty tensor, so it stays.
    """
    removed = list(removed)
    for m in g.members:
        while removed:
            gone = {int(c) for u in removed for c in m.positions[u]}
            if len(gone) < m.size:
                break
            touching = [u for u in removed if len(m.positions[u])]
            removed.remove(max(touching, key=lambda u: scores[u]))
    return sorted(removed)


def _unit_width(graph: "Graph", g: Group) -> int:
    """Channels one unit spans at its first source's output (a whole conv group spans several)."""
    source = graph.node(g.sources[0])
    out = next((m for m in g.members if m.value == source.outputs[0]), None)
    return max(1, len(out.positions[0])) if out is not None and out.positions else 1


def _lowest(scores: np.ndarray, count: int) -> list[int]:
    return sorted(np.argsort(scores, kind="stable")[:count].tolist())


def _touches(graph: "Graph", g: Group) -> set[str]:
    """Names that keep a group whole when ignored: the nodes whose outputs start it, the parameters it slices."""
    return set(g.sources) | {m.value for m in g.params()}


def _take(it, n):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def _first_reasons(skipped: list[tuple[Group, str]], limit: int = 3) -> str:
    reasons = list(dict.fromkeys(r for _, r in skipped))
    more = f"; +{len(reasons) - limit} more" if len(reasons) > limit else ""
    return "; ".join(reasons[:limit]) + more


def _log_skipped(ctx: "PassContext", p: Pass, skipped: list[tuple[Group, str]]) -> None:
    if ctx.log:
        for g, reason in skipped:
            ctx.log(f"  {p.name}: group {g.index} ({g.name}, {g.units} units) left whole: {reason}")
