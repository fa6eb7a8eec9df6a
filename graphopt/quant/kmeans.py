"""One-dimensional k-means (Lloyd) for weight sharing and lookup-table quantization, and the codebook it makes.

`kmeans_1d(values, k, init=...)` clusters scalars. In one dimension the
nearest centroid of a value is found by bisecting the midpoints between sorted
centroids, so an iteration costs O(n log k) and equal values always share a
cluster. Everything is deterministic: the data is sorted once, ties between
two centroids go to the lower one, an empty cluster is re-seeded with the value
farthest from its centroid (the first such), and `kmeans++` draws from a seeded
generator. Arithmetic is float64.

Inits: `linear` spaces centroids evenly over [min, max] (Han et al., Deep
Compression: it keeps the rare large weights, which matter most, apart);
`quantile` puts them at equal-population quantiles (dense where the weights
are; Lloyd-Max's usual start); `kmeans++` samples by squared distance
(Arthur & Vassilvitskii).

`codebook(weight, mask, k, ...)` builds a `Codebook`: with a mask, centroid 0
is exactly zero and holds the pruned entries, and the kept weights share the
other k - 1 centroids, so indices stay at ceil(log2 k) bits and the zeros stay
zeros.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from graphopt.ir.encodings import Codebook

__all__ = ["kmeans_1d", "codebook", "INITS"]

Init = Literal["linear", "quantile", "kmeans++"]
INITS = ("linear", "quantile", "kmeans++")


def kmeans_1d(
    values: np.ndarray, k: int, *, init: Init = "linear", seed: int = 0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(centroids ascending, float64; labels, int64, one per value) of Lloyd's k-means on `values`.

    With fewer than `k` distinct values, each distinct value is its own centroid (fewer than k).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if k < 1 or x.size == 0:
        raise ValueError(f"k-means needs k >= 1 and some values, got k={k} and {x.size} values")
    if not np.all(np.isfinite(x)):
        raise ValueError("k-means got non-finite values (NaN or inf)")
    distinct = np.unique(x)
    if distinct.size <= k:
        return distinct, np.searchsorted(distinct, x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    c = np.sort(_init(xs, k, init, seed))
    bounds = None
    for _ in range(max_iter):
        new, c = _segments(xs, c, k)
        if bounds is not None and np.array_equal(new, bounds):
            break
        bounds = new
        c = (prefix[bounds[1:]] - prefix[bounds[:-1]]) / np.diff(bounds)
    labels = np.empty(x.size, dtype=np.int64)
    labels[order] = np.repeat(np.arange(k), np.diff(bounds))
    return c, labels


def codebook(
    weight: np.ndarray,
    mask: np.ndarray | None,
    k: int,
    *,
    init: Init = "linear",
    seed: int = 0,
    max_iter: int = 100,
    centroids: np.ndarray | None = None,
) -> Codebook:
    """A `Codebook` of `weight` with at most `k` centroids (centroid 0 fixed at zero when `mask` prunes any entry).

    centroids: cluster with these (the learned ones, ascending float64) instead of running
    k-means: each weight takes its nearest (scope=global shares one k-means across layers).
    """
    masked = mask is not None and not mask.all()
    kept = weight[mask] if masked else weight.reshape(-1)
    learned = k - 1 if masked else k
    if kept.size == 0 or learned == 0:
        c, labels = np.zeros(0), np.zeros(kept.size, dtype=np.int64)
    elif centroids is None:
        c, labels = kmeans_1d(kept, learned, init=init, seed=seed, max_iter=max_iter)
    else:
        c = np.asarray(centroids, dtype=np.float64)
        labels = _assign(kept.astype(np.float64), c)
    table = np.concatenate([[0.0], c]) if masked else c
    indices = np.zeros(weight.shape, dtype=_index_dtype(table.size))
    if masked:
        indices[mask] = labels + 1
    else:
        indices[...] = labels.reshape(weight.shape)
    return Codebook(table.astype(weight.dtype), indices)


def _init(xs: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    if init == "linear":
        return np.linspace(xs[0], xs[-1], k)
    if init == "quantile":
        return np.quantile(xs, (np.arange(k) + 0.5) / k)
    if init == "kmeans++":
        rng = np.random.default_rng(seed)
        chosen = [xs[rng.integers(xs.size)]]
        d2 = (xs - chosen[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            pick = rng.choice(xs.size, p=d2 / total) if total > 0 else int(np.argmax(d2))
            chosen.append(xs[pick])
            d2 = np.minimum(d2, (xs - xs[pick]) ** 2)
        return np.asarray(chosen)
    raise ValueError(f"unknown k-means init '{init}'; known: {', '.join(INITS)}")


def _assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest of the ascending centroids `c` (a tie goes to the lower one)."""
    return np.searchsorted((c[:-1] + c[1:]) / 2, x, side="left")


def _segments(xs: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster boundaries in the sorted `xs`, centroids): cluster i is xs[b[i]:b[i+1]].

    Sorted data makes each cluster a run, found by bisecting the midpoints (a value on a
    midpoint goes to the lower cluster). An empty cluster is re-seeded with the value
    farthest from its centroid (an end of some run) until none is empty.
    """
    for _ in range(k + 1):
        bounds = np.concatenate([[0], np.searchsorted(xs, (c[:-1] + c[1:]) / 2, side="right"), [xs.size]])
        empty = np.flatnonzero(np.diff(bounds) == 0)
        if empty.size == 0:
            break
        live = np.flatnonzero(np.diff(bounds) > 0)
        ends = np.concatenate([bounds[live], bounds[live + 1] - 1])
        err = (xs[ends] - np.concatenate([c[live], c[live]])) ** 2
        c = c.copy()
        c[empty[0]] = xs[ends[int(np.argmax(err))]]
        c = np.sort(c)
    return bounds, c


def _index_dtype(k: int) -> type:
    return np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int64
