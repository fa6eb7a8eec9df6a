"""prune-magnitude: zero the smallest weights through masks, unstructured, N:M or in blocks.

    before: @fc.weight: f32[10,64]
    after:  @fc.weight: f32[10,64]  (sparsity=0.900)          prune-magnitude{sparsity=0.9}

Masks go through `graph.set_mask`, so pruned entries are zero in `data` and
stay zero under fine-tuning (`graphopt.train.train` zeroes their gradients).
Targets are conv/linear weights and parameter operands of matmul
(`weight_targets`; `include` adds biases, norms, embeddings; `ignore` skips
nodes or parameters). Patterns:

- `unstructured`: the `round(sparsity * n)` entries of smallest |w| are pruned,
  per parameter (`scope=layer`, at least one entry kept) or ranked across all
  targets together (`scope=global`). Ties go by position: the entry earlier in
  row-major (graph) order is pruned first, so results are reproducible.
- `N:M` (e.g. `2:4`, the semi-structured pattern of sparse tensor cores): in
  every group of M consecutive weights along the reduction axis (input
  channels, innermost; see `weight_targets.matrix_view`) the N of largest |w|
  are kept. Sparsity is fixed at 1 - N/M, so `sparsity` must stay at its
  default or equal it; `scope=global` does not apply. A parameter whose
  reduction length (input channels per group) is not a multiple of M is left
  dense and listed under `skipped` with the reason.
- `block`: `block` x `block` tiles of the [outputs, reduction] matrix are
  scored by their mean |w| (the L1 norm over the entries; edge tiles are
  smaller) and the lowest tiles pruned until the pruned count is closest to
  `round(sparsity * n)`, per parameter or globally.

Masks only grow: entries a mask already prunes rank below every kept one and
are never revived; when a parameter is already sparser than asked it is left as
it is. So the pass composes with `graphopt.train.iterative_prune`, whose ratio is
the cumulative sparsity of the original weights: `as_prune_step()` gives the
`prune_step` it needs. A second run with the same options changes nothing.
Parameters holding an encoding are skipped (the encoding would no longer
describe the pruned data): prune before sharing or quantizing.

Stats: `layers` pruned, `sparsity` over all targets, `per_layer` {parameter:
sparsity}, and `skipped` {parameter: reason} when any.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_targets import WeightTarget, check_options, from_matrix_view, matrix_view, weight_targets

PATTERNS = "unstructured | N:M (e.g. 2:4) | block"


@register_pass
@dataclass(frozen=True)
class PruneMagnitude(Pass):
    """Mask the smallest-magnitude weights: `sparsity` of each (or of all) targets, unstructured, N:M or blocks."""

    name: ClassVar[str] = "prune-magnitude"
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    pattern: str = "unstructured"
    block: int = 4
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    threshold: float | None = None  # the threshold form: prune |w| (a block's mean |w|) below it; sparsity unused

    def __post_init__(self):
        if self.threshold is not None and not (self.threshold >= 0.0 and math.isfinite(self.threshold)):
            raise ValueError(f"{self.name}: threshold must be a finite number >= 0, got {self.threshold}")
        if self.threshold is not None and self.n_of_m is not None:
            raise ValueError(f"{self.name}: pattern {self.pattern} keeps N of M; threshold does not apply")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(
                f"{self.name}: sparsity must lie in [0, 1), got {self.sparsity} (1 would prune everything)"
            )
        if self.block < 1:
            raise ValueError(f"{self.name}: block must be >= 1, got {self.block}")
        n_m = self.n_of_m
        if n_m is not None:
            fixed = 1.0 - n_m[0] / n_m[1]
            if self.sparsity not in (0.5, fixed):
                raise ValueError(
                    f"{self.name}: pattern {self.pattern} prunes exactly {fixed:g}; sparsity={self.sparsity:g} "
                    f"contradicts it (leave sparsity out)"
                )
            if self.scope == "global":
                raise ValueError(
                    f"{self.name}: pattern {self.pattern} is per group of weights; scope=global does not apply"
                )
        check_options(self.name, self.include)

    @property
    def n_of_m(self) -> tuple[int, int] | None:
        """(N, M) of an N:M pattern, None for unstructured and block; ValueError for anything else."""
        if self.pattern in ("unstructured", "block"):
            return None
        parts = self.pattern.split(":")
        if len(parts) == 2 and all(p.isdigit() for p in parts) and 0 < int(parts[0]) < int(parts[1]):
            return int(parts[0]), int(parts[1])
        raise ValueError(f"{self.name}: unknown pattern '{self.pattern}'; known: {PATTERNS} with 0 < N < M")

    def tolerance(self) -> Tolerance:
        # Nothing bounds the outputs at the sparsities pruning is used at (90% of a Gaussian
        # weight removes ~56% of its energy, ~2.5 dB weight SQNR); fine-tuning restores accuracy,
        # and the tests measure that. Output shapes are still checked.
        return Tolerance.bounded()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        targets = weight_targets(graph, self.name, self.include, self.ignore)
        skipped = {t.param: "encoded (prune before sharing or quantizing)" for t in targets if _encoded(graph, t)}
        targets = [t for t in targets if t.param not in skipped]
        if self.n_of_m is not None:
            masks = self._n_of_m_masks(graph, targets, skipped)
        else:
            masks = self._ranked_masks(graph, targets)
        changed = 0
        for t in targets:
            if t.param in masks and not _same_mask(graph, t.param, masks[t.param]):
                graph.set_mask(t.param, masks[t.param])
                changed += 1
        for param, reason in skipped.items():
            if ctx.log:
                ctx.log(f"{self.name}: '{param}' left dense: {reason}")
        return PassResult(graph, changed > 0, self._stats(graph, targets, changed, skipped))

    def as_prune_step(self):
        """`prune_step(graph, ratio) -> graph` for `graphopt.train.iterative_prune`: this pass at that sparsity.

        It prunes a copy. With iterative_prune's default `relative_to="original"` the ratio is the cumulative
        sparsity of the original weights; masks only grow, so each step adds to the last.
        """
        if self.n_of_m is not None:
            raise ValueError(
                f"{self.name}: pattern {self.pattern} has a fixed sparsity; schedule unstructured or block"
            )
        return functools.partial(_prune_step, self)

    # ---- masks -----------------------------------------------------------------------

    def _ranked_masks(self, graph: Graph, targets: list[WeightTarget]) -> dict[str, np.ndarray]:
        """Unstructured or block masks: prune the lowest-scored units per target or over all targets."""
        units = [_units(graph, t, self.pattern, self.block) for t in targets]
        groups = [[u] for u in units] if self.scope == "layer" else [units] if units else []
        return {
            u.target.param: mask
            for group in groups
            for u, mask in zip(group, _choose(group, self.sparsity, self.scope, self.threshold))
        }

    def _n_of_m_masks(
        self, graph: Graph, targets: list[WeightTarget], skipped: dict[str, str]
    ) -> dict[str, np.ndarray]:
        keep_n, m = self.n_of_m
        masks = {}
        for t in targets:
            p = graph.param(t.param)
            score = matrix_view(_scores(p), t)
            if t.in_axis is None:
                skipped[t.param] = f"{t.kind} has no reduction axis for {self.pattern} groups"
                continue
            if score.shape[1] % m:
                length = p.data.shape[t.in_axis]
                skipped[t.param] = f"reduction axis {t.in_axis} has length {length}, not a multiple of {m}"
                continue
            groups = score.reshape(score.shape[0], -1, m)
            order = np.argsort(-groups, axis=-1, kind="stable")  # largest first, earlier first on ties
            keep = np.zeros(groups.shape, dtype=bool)
            np.put_along_axis(keep, order[..., :keep_n], True, axis=-1)
            mask = from_matrix_view(keep.reshape(score.shape), p.data.shape, t)
            masks[t.param] = mask & (p.mask if p.mask is not None else True)
        return masks

    def _stats(
        self, graph: Graph, targets: list[WeightTarget], changed: int, skipped: dict[str, str]
    ) -> dict[str, Any]:
        sizes = {t.param: graph.param(t.param).data.size for t in targets if t.param not in skipped}
        per_layer = {name: round(graph.param(name).sparsity, 4) for name in sizes}
        total = sum(per_layer[n] * s for n, s in sizes.items()) / max(sum(sizes.values()), 1)
        stats: dict[str, Any] = {"layers": changed, "sparsity": round(total, 4), "per_layer": per_layer}
        if skipped:
            stats["skipped"] = dict(skipped)
        return stats


@dataclass
class _Units:
    """One target's prunable units: their scores, their sizes and a map from entries to units."""

    target: WeightTarget
    shape: tuple[int, ...]
    score: np.ndarray  # per unit; -1 where a unit is wholly pruned already
    size: np.ndarray  # entries per unit
    fresh: np.ndarray  # entries per unit not yet pruned
    of_entry: np.ndarray  # the matrix view's unit index per entry
    already: int  # entries pruned before this run
    mask: np.ndarray | None  # the mask before this run


def _units(graph: Graph, t: WeightTarget, pattern: str, block: int) -> _Units:
    p = graph.param(t.param)
    score = matrix_view(_scores(p), t)
    rows, cols = score.shape
    if pattern == "unstructured":
        of_entry = np.arange(score.size).reshape(score.shape)
    else:
        bc = -(-cols // block)
        of_entry = (np.arange(rows)[:, None] // block) * bc + np.arange(cols)[None, :] // block
    count = int(of_entry.max()) + 1
    live = score >= 0
    size = np.bincount(of_entry.ravel(), minlength=count)
    fresh = np.bincount(of_entry.ravel(), weights=live.ravel(), minlength=count).astype(np.int64)
    total = np.bincount(of_entry.ravel(), weights=np.where(live, score, 0.0).ravel(), minlength=count)
    unit_score = np.where(fresh > 0, total / size, -1.0)
    return _Units(t, p.data.shape, unit_score, size, fresh, of_entry, int((~live).sum()), p.mask)


def _choose(group: list[_Units], sparsity: float, scope: str, threshold: float | None = None) -> list[np.ndarray]:
    """The masks of `group`'s targets after pruning its lowest units: to the count closest to `sparsity`,
    or (threshold form) every unit scoring below `threshold`; a layer keeps at least one weight."""
    n = sum(int(u.size.sum()) for u in group)
    target = math.floor(sparsity * n + 0.5)
    if scope == "layer":
        target = min(target, n - 1)  # a layer keeps at least one weight
    scores = np.concatenate([u.score for u in group])
    fresh = np.concatenate([u.fresh for u in group])
    order = np.argsort(scores, kind="stable")  # already-pruned units (-1) first, then by score, then by position
    already = sum(u.already for u in group)
    counts = already + np.concatenate([[0], np.cumsum(fresh[order])])
    if threshold is not None:
        j = int(np.count_nonzero(scores < threshold))
        if scope == "layer" and j == scores.size and (scores >= 0).any():
            j -= 1  # the largest live unit stays
    else:
        j = int(np.argmin(np.abs(counts - target)))  # the prefix closest to the target (the shorter on ties)
    j = max(j, int(np.count_nonzero(scores < 0)))  # masks only grow
    pruned = np.zeros(scores.size, dtype=bool)
    pruned[order[:j]] = True
    masks, start = [], 0
    for u in group:
        unit_pruned = pruned[start : start + u.score.size]
        start += u.score.size
        keep = ~unit_pruned[u.of_entry]
        mask = from_matrix_view(keep, u.shape, u.target)
        masks.append(mask if u.mask is None else mask & u.mask)  # a partly pruned block keeps its zeros
    return masks


def _scores(p) -> np.ndarray:
    """|w| in float64, -1 where the mask already prunes (below every live entry)."""
    score = np.abs(p.data.astype(np.float64))
    return score if p.mask is None else np.where(p.mask, score, -1.0)


def _encoded(graph: Graph, t: WeightTarget) -> bool:
    return graph.param(t.param).encoding is not None


def _same_mask(graph: Graph, name: str, mask: np.ndarray) -> bool:
    old = graph.param(name).mask
    return (old is None and bool(mask.all())) or (old is not None and np.array_equal(old, mask))


def _prune_step(pass_: PruneMagnitude, graph: Graph, ratio: float) -> Graph:
    out = graph.copy()
    dataclasses.replace(pass_, sparsity=ratio).run(out, PassContext())
    return out
