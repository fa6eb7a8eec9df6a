"""Flows: where pruning units sit on the axes of one tensor, and how ops carry them.

A *flow* says which positions of a tensor belong to which pruning unit: row i
is unit `units[i]` at coordinates `coords[i]` on the tensor's `axes` (the
other axes are not involved: the unit spans all of them). The dependency
analysis moves flows across ops with two mechanisms:

- *Axis classes* (`AxisClass`): the axes of an op's ports that are the same
  dimension, each member relating its coordinate `c` to a shared coordinate
  `g = (offset + step * c) // block` (concat offsets, slice steps, conv groups
  as blocks). A member with `axis=None` is pinned: the port lacks the axis
  and only `g == offset` reaches it (select). A tracked axis whose class has no
  member on the target port is dropped there: positions that differ only on it
  land on one position, so their units must be pruned together.
- *Reshape segments* (`reshape_flow`): row-major reshapes keep each aligned
  segment's flat index, so a channel becomes a block of features (flatten)
  and a feature axis becomes (heads, head_dim).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import prod

import numpy as np

Port = tuple[str, int]  # ("in", i) or ("out", i)


@dataclass(frozen=True)
class Flow:
    axes: tuple[int, ...]  # sorted physical axes
    coords: np.ndarray  # int64 [P, len(axes)]
    units: np.ndarray  # int64 [P]

    @classmethod
    def along(cls, axis: int, units: np.ndarray) -> Flow:
        """Unit `units[c]` at coordinate c of one axis."""
        units = np.asarray(units, dtype=np.int64)
        return cls((axis,), np.arange(units.size, dtype=np.int64)[:, None], units)

    def __len__(self) -> int:
        return int(self.units.size)

    def expand_to(self, axes: tuple[int, ...], shape: tuple[int, ...]) -> Flow:
        """The same positions on a superset of axes: each row spans every coordinate of the added axes."""
        extra = [a for a in axes if a not in self.axes]
        if not extra:
            return self._ordered(axes)
        grid = np.array(list(itertools.product(*(range(shape[a]) for a in extra))), dtype=np.int64)
        grid = grid.reshape(-1, len(extra))
        rows = np.repeat(np.arange(len(self)), len(grid))
        coords = np.concatenate([self.coords[rows], np.tile(grid, (len(self), 1))], axis=1)
        return Flow(self.axes + tuple(extra), coords, self.units[rows])._ordered(axes)

    def project(self, axes: tuple[int, ...]) -> Flow:
        """The same rows on a subset of the axes (positions differing only on dropped axes coincide)."""
        return Flow(tuple(axes), self.coords[:, [self.axes.index(a) for a in axes]], self.units)

    def _ordered(self, axes: tuple[int, ...]) -> Flow:
        order = [self.axes.index(a) for a in axes]
        return Flow(tuple(axes), self.coords[:, order], self.units)


def flat_keys(coords: np.ndarray, axes: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    if not axes:
        return np.zeros(coords.shape[0], dtype=np.int64)
    return np.ravel_multi_index(tuple(coords.T), tuple(shape[a] for a in axes)).astype(np.int64)


@dataclass(frozen=True)
class Member:
    """One port's view of a shared dimension: g = (offset + step * c) // block, taken mod `modulo` when set."""

    port: Port
    axis: int | None
    offset: int = 0
    step: int = 1
    block: int = 1
    modulo: int = 0  # the index inside a conv group: every group's k-th channel shares g = k


AxisClass = tuple[Member, ...]


def _to_global(m: Member, c: np.ndarray) -> np.ndarray:
    g = (m.offset + m.step * c) // m.block
    return g % m.modulo if m.modulo else g


def _from_global(m: Member, g: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row index into g, coordinate) pairs: every port coordinate whose global coordinate is g[row]."""
    if m.modulo:
        copies = np.arange(size // m.modulo, dtype=np.int64) * m.modulo
        rows = np.repeat(np.arange(g.size), copies.size)
        return rows, (g[:, None] + copies[None, :]).reshape(-1)
    if m.block > 1:
        span = np.arange(m.block, dtype=np.int64)
        rows = np.repeat(np.arange(g.size), m.block)
        c = (g[:, None] * m.block + span[None, :] - m.offset).reshape(-1)
    else:
        rows = np.arange(g.size)
        c = g - m.offset
        ok = c % m.step == 0
        rows, c = rows[ok], c[ok] // m.step
    ok = (c >= 0) & (c < size)
    return rows[ok], c[ok]


def map_flow(flow: Flow, src: Port, dst: Port, classes: list[AxisClass], dst_shape: tuple[int, ...]) -> Flow | None:
    """The positions `flow` (on port `src`) forces on port `dst`, or None when none."""
    rows = np.arange(len(flow))
    cols: dict[int, np.ndarray] = {}  # dst axis -> coordinate per row
    mapped = False
    for cls in classes:
        mine = [m for m in cls if m.port == src]
        theirs = [m for m in cls if m.port == dst]
        if not mine or not theirs:
            continue
        m, t = mine[0], theirs[0]
        if m.axis is None:  # pinned on src: dst gets the fixed coordinate
            g = np.full(rows.size, m.offset, dtype=np.int64)
        elif m.axis in flow.axes:
            g = _to_global(m, flow.coords[rows, flow.axes.index(m.axis)])
            mapped = True
        else:
            continue
        if t.axis is None:  # pinned on dst: only the selected coordinate passes
            keep = g == t.offset
            rows = rows[keep]
            cols = {a: v[keep] for a, v in cols.items()}
            continue
        sel, c = _from_global(t, g, dst_shape[t.axis])
        rows = rows[sel]
        cols = {a: v[sel] for a, v in cols.items()}
        cols[t.axis] = c
    if not mapped or rows.size == 0 or not cols:
        return None
    axes = tuple(sorted(cols))
    coords = np.stack([cols[a] for a in axes], axis=1)
    return Flow(axes, coords, flow.units[rows])


def reshape_segments(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[range, range]] | None:
    """Aligned row-major segments of a reshape: (src axes, dst axes) with equal products; None if sizes differ."""
    if prod(src) != prod(dst) or 0 in src or 0 in dst:
        return None
    out, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        i0, j0, pa, pb = i, j, 1, 1
        if i < len(src):
            pa, i = src[i], i + 1
        if j < len(dst):
            pb, j = dst[j], j + 1
        while pa != pb:
            if pa < pb and i < len(src):
                pa, i = pa * src[i], i + 1
            elif pb < pa and j < len(dst):
                pb, j = pb * dst[j], j + 1
            else:
                return None
        out.append((range(i0, i), range(j0, j)))
    return out


def reshape_flow(flow: Flow, src: tuple[int, ...], dst: tuple[int, ...]) -> Flow | None:
    """`flow` on a tensor of shape `src` seen on its reshape to `dst` (row-major)."""
    segs = reshape_segments(src, dst)
    if segs is None:
        return None
    touched = [(s, d) for s, d in segs if any(a in s for a in flow.axes)]
    src_axes = tuple(sorted({a for s, _ in touched for a in s}))
    full = flow.expand_to(src_axes, src)
    cols: dict[int, np.ndarray] = {}
    for s, d in touched:
        sub = full.coords[:, [src_axes.index(a) for a in s]]
        flat = np.ravel_multi_index(tuple(sub.T), tuple(src[a] for a in s)) if len(s) else np.zeros(len(full), int)
        if len(d):
            for a, c in zip(d, np.unravel_index(flat, tuple(dst[a] for a in d))):
                cols[a] = np.asarray(c, dtype=np.int64)
    if not cols:
        return None
    axes = tuple(sorted(cols))
    return Flow(axes, np.stack([cols[a] for a in axes], axis=1), full.units)
