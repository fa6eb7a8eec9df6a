"""The trade-off plot of `graphopt report --plot`: accuracy, size and latency of model variants, Pareto front marked.

One panel per pair of measured figures: accuracy against size (bytes on disk),
accuracy against latency when latency was measured, or latency against size
when accuracy was not; without either, MACs against size. Latency is the
fastest timed run (the report also gives the median): on a busy machine the
median mostly measures the other work. A variant is on the
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
    "latency": "latency (ms, fastest run)",
    "macs": "MACs (M)",
}


def _figure(r: ModelReport, which: str) -> float:
    if which == "size":
        return (r.file_bytes if r.file_bytes is not None else r.weight_bytes) / 1e3
    if which == "accuracy":
        return 100 * r.accuracy["top1"]
    if which == "latency":
        return r.latency["min_ms"]  # the fastest run: what the code costs, least disturbed by other load
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
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xph"
    ncol = 2 * len(panels) + 1  # legend columns under the panels
    fig, axes = plt.subplots(1, len(panels), figsize=(1.5 + 5 * len(panels), 4.6), squeeze=False)
    for ax, (xk, yk, maximize) in zip(axes[0], panels):
        pts = [(_figure(r, xk), _figure(r, yk)) for r in reports]
        front = pareto_front(pts, maximize_y=maximize)
        line = sorted(pts[i] for i in front)
        xs, ys = [p[0] for p in line], [p[1] for p in line]
        ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1, alpha=0.6, zorder=2)
        for i, (x, y) in enumerate(pts):
            color, on = colors[i % len(colors)], i in front
            ax.scatter([x], [y], s=70 if on else 55, zorder=4 if on else 3, marker=markers[i % len(markers)],
                       color=color if on else "white", edgecolors=color, linewidths=1.5)  # fmt: skip
        ax.margins(x=0.12, y=0.1)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(_LABELS[xk])
        ax.set_ylabel(_LABELS[yk])
        ax.grid(True, alpha=0.3)
    # One key for all panels, under them: a variant's marker is filled where it is on that panel's Pareto front.
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], linestyle="", marker=markers[i % len(markers)], color=colors[i % len(colors)], label=label)
        for i, label in enumerate(labels)
    ]
    handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto front (filled: on it)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), fontsize=8, frameon=False)
    better = "up" if panels[0][2] else "down"
    fig.suptitle(f"{labels[0]} and {len(reports) - 1} variant(s): better is left and {better}", fontsize=10)
    rows = -(-len(handles) // min(ncol, len(handles)))
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
