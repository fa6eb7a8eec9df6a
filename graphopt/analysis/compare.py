"""Before/after figures of a run that changed a model: params, MACs, bytes, and latency where it was measured.

`compare_graphs(before, after)` takes the totals from `analysis/cost.py`
(params: every parameter once; MACs; weight bytes as stored); file sizes and
latencies are added by whoever knows them (`opt` writes a file, `report`
times a build). `Comparison.table()` is the compact table the CLI prints to
stderr at the end of `opt`, `compile` and `graphopt.optimize`:

    metric    before    after  change        (digits CNN, fold-bn,prune-channels{ratio=0.5})
    nodes         13       10  -3
    params    24.29K    6.22K  0.26x
    MACs     599.68K  152.38K  0.25x
    weights  97.15KB  24.90KB  0.26x
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from graphopt.analysis.cost import graph_cost, human_bytes, human_count

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph

__all__ = ["Comparison", "compare_graphs"]


@dataclass(frozen=True)
class Comparison:
    """Totals of a model before and after a run; a figure not known is None."""

    nodes: tuple[int, int]
    params: tuple[int, int]
    macs: tuple[int, int]
    weight_bytes: tuple[int, int]
    file_bytes: tuple[int | None, int | None] = (None, None)
    latency_ms: tuple[float | None, float | None] = (None, None)
    op_counts: tuple[dict[str, int], dict[str, int]] = ({}, {})

    @property
    def changed(self) -> bool:
        """Whether any counted figure differs (latency is measured, not counted, so it is left out)."""
        pairs = (self.nodes, self.params, self.macs, self.weight_bytes, self.op_counts)
        return any(b != a for b, a in pairs)

    def with_files(self, before: int | None, after: int | None) -> Comparison:
        return _replace(self, file_bytes=(before, after))

    def with_latency(self, before_ms: float | None, after_ms: float | None) -> Comparison:
        return _replace(self, latency_ms=(before_ms, after_ms))

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(metric, before, after, change) for every figure known on both sides."""
        rows = [("nodes", str(self.nodes[0]), str(self.nodes[1]), _delta(*self.nodes))]
        for label, (b, a), fmt in (
            ("params", self.params, human_count),
            ("MACs", self.macs, human_count),
            ("weights", self.weight_bytes, human_bytes),
            ("file", self.file_bytes, human_bytes),
        ):
            if b is not None and a is not None:
                rows.append((label, fmt(b), fmt(a), _ratio(b, a)))
        b, a = self.latency_ms
        if b is not None and a is not None:
            rows.append(("latency", f"{b:.3f} ms", f"{a:.3f} ms", _ratio(b, a)))
        return rows

    def table(self) -> str:
        """The compact table: one row per figure, change as after/before (a difference for node counts)."""
        rows = [("metric", "before", "after", "change"), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows
        )

    def to_json(self) -> dict:
        return asdict(self)


def compare_graphs(before: Graph, after: Graph) -> Comparison:
    """Node, parameter, MAC and weight-byte totals of `before` and `after` (neither is modified)."""
    b, a = graph_cost(before), graph_cost(after)
    return Comparison(
        nodes=(len(before.nodes), len(after.nodes)),
        params=(b.params, a.params),
        macs=(b.macs, a.macs),
        weight_bytes=(b.weight_bytes, a.weight_bytes),
        op_counts=(before.op_counts(), after.op_counts()),
    )


def _replace(c: Comparison, **changes) -> Comparison:
    from dataclasses import replace

    return replace(c, **changes)


def _delta(b: int, a: int) -> str:
    return f"{a - b:+d}" if a != b else "="


def _ratio(b: float, a: float) -> str:
    if b == a:
        return "="
    return f"{a / b:.2f}x" if b else "n/a"
