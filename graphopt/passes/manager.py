"""Run a Pipeline: copy on entry, instruments around each pass, a verified graph after each.

Whether a pass changed the graph is decided from the graph's content
(`ir.fingerprint`), not from the pass's word: a pass that changes the graph and
reports `changed=False`, or that changes it behind the verbs (so the version,
and every cache keyed by it, did not move), is an error naming it. A pass that
reports a change but leaves the content as it was is recorded as unchanged.
Errors name the pass, its options and the passes before it.

The result records the graph's cost (`analysis/cost.py`: params, MACs, weight
bytes; shapes only, so cheap) on entry and at the end; `report()` shows the
per-layer cost table when the pipeline changed any of those totals.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphopt.analysis.cost import GraphCost, format_cost_table, graph_cost
from graphopt.errors import GraphoptError, PassError, VerificationError
from graphopt.ir.fingerprint import Fingerprint, describe_change, fingerprint
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes.pipeline import Pipeline


@dataclass
class PassRecord:
    pass_: Pass
    changed: bool
    stats: dict[str, Any]
    seconds: float


@dataclass
class PipelineResult:
    graph: "Graph"
    records: list[PassRecord] = field(default_factory=list)
    cost_before: GraphCost | None = None  # of the graph on entry
    cost_after: GraphCost | None = None  # of the result

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.records)

    @property
    def cost_changed(self) -> bool:
        """Whether params, MACs or weight bytes differ between entry and result."""
        if self.cost_before is None or self.cost_after is None:
            return False
        return not self.cost_before.same_totals(self.cost_after)

    def report(self, *, top: int | None = None) -> str:
        """One row per pass with its time, whether it changed the graph, and its stats.

        When the pipeline changed params, MACs or weight bytes, the per-layer cost
        table before and after follows (`top`: only the layers with the most MACs).
        """
        rows = [("pass", "time", "changed", "stats")]
        for r in self.records:
            stats = " ".join(f"{k}={v}" for k, v in r.stats.items())
            rows.append((str(r.pass_), f"{r.seconds * 1e3:.1f} ms", "yes" if r.changed else "no", stats))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        text = "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows)
        if self.cost_changed:
            text += "\n\n" + format_cost_table(self.cost_before, self.cost_after, top=top)
        return text


def run_pipeline(pipeline: "Pipeline", graph: "Graph", ctx: PassContext | None = None) -> PipelineResult:
    ctx = ctx if ctx is not None else PassContext()
    ctx.history = []
    work = graph.copy()
    result = PipelineResult(work, cost_before=graph_cost(work))
    for inst in ctx.instruments:
        inst.enter_pipeline(work, ctx)
    content = fingerprint(work)
    for index, p in enumerate(pipeline.passes, 1):
        for inst in ctx.instruments:
            inst.before_pass(p, work, ctx)
        version = work.version
        start = time.perf_counter()
        out = _run_one(p, work, ctx)
        seconds = time.perf_counter() - start
        out, content = _judge_change(p, work, version, content, out, ctx)
        work = out.graph
        if ctx.verify_structure:
            try:
                work.verify()
            except VerificationError as e:
                raise PassError(f"pass '{p}' left an invalid graph: {e}; {ctx.predecessors()}") from e
        for inst in reversed(ctx.instruments):
            inst.after_pass(p, work, out, ctx)
        ctx.history.append(p)
        result.records.append(PassRecord(p, out.changed, dict(out.stats), seconds))
        if ctx.log:
            stats = " ".join(f"{k}={v}" for k, v in out.stats.items())
            ctx.log(
                f"[{index}/{len(pipeline)}] {p}: {seconds * 1e3:.1f} ms"
                f"{' (changed)' if out.changed else ''}{' ' + stats if stats else ''}"
            )
    result.graph = work
    result.cost_after = graph_cost(work)
    for inst in ctx.instruments:
        inst.exit_pipeline(work, ctx)
    return result


def _judge_change(
    p: Pass, graph: "Graph", version: int, before: Fingerprint, out: PassResult, ctx: PassContext
) -> tuple[PassResult, Fingerprint]:
    """`out` with `changed` taken from the content; raises when the pass misreported or bypassed the verbs."""
    after = fingerprint(out.graph)
    changed = after != before
    if changed and out.graph is graph and graph.version == version:
        raise PassError(
            f"pass '{p}' edited the graph behind its verbs ({describe_change(before, after)}, "
            f"the graph's version did not move); {ctx.predecessors()}"
        )
    if changed and not out.changed:
        raise PassError(
            f"pass '{p}' changed the graph ({describe_change(before, after)}) but reported "
            f"changed=False; {ctx.predecessors()}"
        )
    return dataclasses.replace(out, changed=changed), after


def _run_one(p: Pass, graph: "Graph", ctx: PassContext) -> PassResult:
    try:
        out = p.run(graph, ctx)
    except PassError:
        raise
    except GraphoptError as e:
        raise PassError(f"pass '{p}' failed: {e}; {ctx.predecessors()}") from e
    except Exception as e:
        hint = ""
        if isinstance(e, (ValueError, TypeError)) and "read-only" in str(e):
            hint = " (parameters and node attributes change only through the graph's verbs: set_param, set_attrs, ...)"
        raise PassError(f"pass '{p}' crashed with {type(e).__name__}: {e}{hint}; {ctx.predecessors()}") from e
    if not isinstance(out, PassResult):
        raise PassError(f"pass '{p}' returned {type(out).__name__}, not a PassResult")
    return out
