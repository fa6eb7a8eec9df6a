"""Range observers: they see an activation batch by batch and then choose its real range.

- `minmax`: the smallest and largest value seen.
- `percentile`: the range holding `percentile` % of the values (|x| when symmetric,
  both tails when not).
- `entropy`: TensorRT's calibration: the clipping threshold whose 128-level
  quantized histogram is closest in KL divergence to the clipped reference one.
- `mse`: the clipping threshold that minimises the expected squared quantization
  error (clipping error of the tail, plus step**2 / 12 for every value inside).

With symmetric="auto", the side of the search (symmetric or not) is chosen from
the observed min and max as `scales.is_symmetric` chooses the final range.

The histogram observers keep one histogram over [-m, m] (`bins` bins a side).
When a batch exceeds m, m doubles (as often as needed) and pairs of bins merge,
which is exact: no value moves to a bin it does not belong to, and one pass
over the calibration data is enough. Non-finite values are counted, not binned.
The entropy search leaves out exact zeros (a ReLU output's spike at 0), which
every range represents exactly and which would otherwise pull the threshold down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphopt.ir.ops import quant_range
from graphopt.quant.scales import is_symmetric

OBSERVERS = ("minmax", "percentile", "entropy", "mse")


@dataclass
class MinMaxObserver:
    lo: float = math.inf
    hi: float = -math.inf
    count: int = 0
    nonfinite: int = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        finite = x[np.isfinite(x)]
        self.nonfinite += x.size - finite.size
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        self.count += finite.size

    def range(self) -> tuple[float, float]:
        if not self.count:
            raise ValueError("no finite value was observed")
        return self.lo, self.hi


@dataclass
class HistogramObserver:
    method: str = "percentile"
    percentile: float = 99.99
    dtype: str = "int8"
    symmetric: bool | str = True  # or "auto": decided from the observed min and max
    bins: int = 2048  # a side
    minmax: MinMaxObserver = field(default_factory=MinMaxObserver)
    limit: float = 0.0  # m: the histogram covers [-m, m]
    hist: np.ndarray | None = None
    zeros: int = 0  # exact zeros (ReLU outputs): exactly representable, left out of the entropy search

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        self.minmax.observe(x)
        x = x[np.isfinite(x)]
        if not x.size:
            return
        top = float(np.max(np.abs(x)))
        self.zeros += int(np.count_nonzero(x == 0))
        if self.hist is None:
            self.hist = np.zeros(2 * self.bins, np.float64)
        if top > self.limit:
            self._widen(top)
        self.hist += np.histogram(x, bins=2 * self.bins, range=(-self.limit, self.limit))[0] if self.limit else 0

    def _widen(self, top: float) -> None:
        if self.limit == 0.0:
            if self.hist.any():  # only zeros so far: they stay in the bin right of 0
                self.hist[:] = 0
                self.hist[self.bins] = self.minmax.count
            self.limit = top
            return
        factor = 2 ** math.ceil(math.log2(top / self.limit))
        group = np.arange(self.bins) // factor
        merged = []
        for side in (self.hist[: self.bins][::-1], self.hist[self.bins :]):  # outward from 0
            out = np.zeros(self.bins)
            np.add.at(out, group, side)
            merged.append(out)
        self.hist = np.concatenate([merged[0][::-1], merged[1]])
        self.limit *= factor

    # ---- choosing a range -----------------------------------------------------------

    def range(self) -> tuple[float, float]:
        lo, hi = self.minmax.range()
        if self.limit == 0.0:
            return lo, hi
        symmetric = is_symmetric(lo, hi, self.symmetric)
        if self.method == "percentile" and not symmetric:
            return self._two_sided_percentile(lo, hi)
        t = {"percentile": self._percentile, "entropy": self._entropy, "mse": self._mse}[self.method](symmetric)
        t = min(t, max(-lo, hi))
        return (-t, t) if symmetric else (max(lo, -t), min(hi, t))

    @property
    def width(self) -> float:
        return self.limit / self.bins

    def _abs_hist(self) -> np.ndarray:
        """Histogram of |x| over [0, m], trimmed after its last non-empty bin."""
        a = self.hist[self.bins :] + self.hist[: self.bins][::-1]
        last = np.flatnonzero(a)
        return a[: last[-1] + 1] if last.size else a[:1]

    def _percentile(self, symmetric: bool) -> float:
        a = self._abs_hist()
        cdf = np.cumsum(a) / a.sum()
        return (int(np.searchsorted(cdf, self.percentile / 100.0)) + 1) * self.width

    def _two_sided_percentile(self, lo: float, hi: float) -> tuple[float, float]:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        edges = np.linspace(-self.limit, self.limit, 2 * self.bins + 1)
        tail = 1.0 - self.percentile / 100.0
        low = edges[int(np.searchsorted(cdf, tail))]
        high = edges[int(np.searchsorted(cdf, 1.0 - tail)) + 1]
        return max(lo, float(low)), min(hi, float(high))

    def _mse(self, symmetric: bool) -> float:
        """The threshold t (a bin edge) minimising the expected squared error of quantizing to [-t, t]."""
        qmin, qmax = quant_range(self.dtype)
        a = self._abs_hist()
        centers = (np.arange(a.size) + 0.5) * self.width
        t = (np.arange(a.size) + 1.0)[:, None] * self.width  # candidate thresholds, one per row
        step = (2.0 * t if symmetric else t) / (qmax - qmin)
        clipped = np.where(centers[None, :] > t, (centers[None, :] - t) ** 2, step**2 / 12.0)
        return float(t[int(np.argmin(clipped @ a)), 0])

    def _entropy(self, symmetric: bool) -> float:
        """TensorRT's threshold: minimise KL(reference clipped at t || its 128-level quantization)."""
        levels = (quant_range(self.dtype)[1] - quant_range(self.dtype)[0] + 1) // (2 if symmetric else 1)
        a = self._abs_hist()
        a[0] -= self.zeros
        if a.size <= levels:
            return a.size * self.width
        best, best_i = math.inf, a.size
        for i in range(levels, a.size + 1):
            divergence = _clipped_kl(a, i, levels)
            if divergence < best:
                best, best_i = divergence, i
        return best_i * self.width


def _clipped_kl(a: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q): P = a[:i] with the tail added to its last bin; Q = a[:i] merged into `levels` bins,
    each spread evenly over its non-empty bins."""
    p = a[:i].copy()
    p[-1] += a[i:].sum()
    nonzero = a[:i] != 0
    per = i // levels
    group = np.minimum(np.arange(i) // per, levels - 1)
    starts = np.arange(levels) * per
    sums = np.add.reduceat(a[:i], starts)
    counts = np.add.reduceat(nonzero.astype(np.float64), starts)
    q = np.where(nonzero, (sums / np.maximum(counts, 1))[group], 0.0)
    p /= p.sum()
    q /= max(q.sum(), 1e-300)
    mask = p > 0
    q = np.where(mask & (q == 0), 1e-4, q)  # smoothing: P has mass where Q has none (the tail bin)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def make_observer(method: str, *, dtype: str = "int8", symmetric: bool | str = True, percentile: float = 99.99):
    """A fresh observer for `method` (one of OBSERVERS)."""
    if method == "minmax":
        return MinMaxObserver()
    if method not in OBSERVERS:
        raise ValueError(f"unknown calibrator '{method}'; choose one of {', '.join(OBSERVERS)}")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile {percentile} must lie in (0, 100]")
    return HistogramObserver(method, percentile, dtype, symmetric)
