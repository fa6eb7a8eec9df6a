"""The trade-off plot of `graphopt report --plot`: accuracy, size and latency of model variants, Pareto front marked.

One panel per pair of measured figures: accuracy against size (bytes on disk),
accuracy against latency when latency was measured, or latency against size
when accuracy was not; without either, MACs against size. A variant is on the
Pareto front of a panel when no other is at least as good on both axes and
better on one (smaller size or latency; higher accuracy); front points are
filled and joined by a step line, dominated ones hollow. matplotlib's Agg
backend writes the PNG (no display needed); the file is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from graphopt.errors import GraphoptError
from graphopt.fileio import atomic_write_bytes, check_output_path

if TYPE_CHECKING:
    from graphopt.analysis.report import ModelReport

__all__ = ["pareto_front", "plot_tradeoff"]


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_y: bool) -> list[int]:
    """Indices of the points no other point dominates (x smaller is better; y larger when `maximize_y`)."""

    def better_or_equal(a, b) -> bool:
        return a[0] <= b[0] and (a[1] >= b[1] if maximize_y else a[1] <= b[1])

    return [
        i
        for i, p in enumerate(points)
        if not any(better_or_equal(q, p) and q != p for j, q in enumerate(points) if j != i)
    ]


def _axes(reports: Sequence[ModelReport]) -> list[tuple[str, str, bool]]:
    """(x figure, y figure, maximize y) per panel, from what every report has."""
    has_acc = all(r.accuracy is not None for r in reports)
    has_lat = all(r.latency is not None for r in reports)
    if has_acc:
        return [("size", "accuracy", True)] + ([("latency", "accuracy", True)] if has_lat else [])
    if has_lat:
        return [("size", "latency", False)]
    return [("size", "macs", False)]


_LABELS = {
    "size": "bytes on disk (KB)",
    "accuracy": "top-1 accuracy (%)",
    "latency": "latency (ms, median)",
    "macs": "MACs (M)",
}


def _figure(r: ModelReport, which: str) -> float:
    if which == "size":
        return (r.file_bytes if r.file_bytes is not None else r.weight_bytes) / 1e3
    if which == "accuracy":
        return 100 * r.accuracy["top1"]
    if which == "latency":
        return r.latency["median_ms"]
    return r.macs / 1e6


def plot_tradeoff(
    reports: Sequence[ModelReport], path: str | os.PathLike, *, labels: Sequence[str] | None = None
) -> Path:
    """Write the trade-off PNG of `reports` to `path`; returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise GraphoptError(f"--plot needs matplotlib ({e}): pip install -e '.[plot]'") from e
    check_output_path(path)
    labels = list(labels) if labels is not None else [Path(r.path).name if r.path else r.name for r in reports]
    panels = _axes(reports)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (xk, yk, maximize) in zip(axes[0], panels):
        pts = [(_figure(r, xk), _figure(r, yk)) for r in reports]
        front = pareto_front(pts, maximize_y=maximize)
        for i, ((x, y), label) in enumerate(zip(pts, labels)):
            on = i in front
            ax.scatter(
                [x], [y], s=60, zorder=3, color="tab:red" if on else "white", edgecolors="tab:red" if on else "grey"
            )
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
        line = sorted(pts[i] for i in front)
        ax.step(
            [p[0] for p in line],
            [p[1] for p in line],
            where="post",
            color="tab:red",
            alpha=0.5,
            zorder=2,
            label="Pareto front",
        )
        ax.margins(x=0.2, y=0.15)  # room for the labels
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(_LABELS[xk])
        ax.set_ylabel(_LABELS[yk])
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right" if maximize else "upper left", fontsize=8)
    name = reports[0].name
    fig.suptitle(f"{name}: {len(reports)} variants (better: left, {'up' if panels[0][2] else 'down'})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
