"""mixed-precision: each layer's weight precision from measured sensitivity, meeting a budget at the fewest bytes.

    mixed-precision{budget-sqnr=30}                                  # output SQNR >= 30 dB on the calibration data
    mixed-precision{budget-accuracy=0.99 candidates=[int4,int8,fp16]}  # ctx.evaluation(graph) >= 0.99
    mixed-precision                                                  # budget-sqnr=30 (DEFAULT_SQNR_DB)

Layers are the float weights `quantize-weights` takes (conv, linear, a matmul's
parameter operand). Candidates are weight-only storage precisions; activations
stay float: `int4` (symmetric, one scale per `group` input channels, packed two
per byte), `int8` (symmetric, per output channel), `fp16`, `fp32` (kept). The
best a plan can do is every layer at the widest candidate, so `fp32` must be a
candidate for "keep it float" to be allowed.

1. Sensitivity (`analysis.sensitivity.weight_sensitivity`): the output SQNR with
   one layer at one candidate and every other layer float, on `ctx.calibration`
   (seeded random inputs without it), for every layer and candidate.
2. A greedy path from every layer at its smallest candidate to every layer at its
   widest: each step moves the one layer whose move removes the most predicted
   output noise per added byte (noise powers 10^(-SQNR/10) of layers add up).
3. Every plan on the path is one size; the metric (output SQNR on the calibration
   data, or `ctx.evaluation`) rises along it, so a binary search over the path,
   measuring each plan it visits on the real rewritten graph, finds the smallest
   plan that meets the budget. The widest plan is measured first: when it misses,
   the pass fails and states the best reachable value.
4. The chosen plan is applied: int4/int8 as `quantize-weights` writes them
   (`w.int4` feeding `dequantize`), fp16 as a float16 parameter feeding
   `cast{dtype=float32}` (a later fold-constants would fold the cast back).

The plan goes into the stats (`plan`: per layer its node, precision, bytes and
SQNR alone), one log line per layer, and `graph.metadata["mixed_precision"]`
(budget, reached value, weight bytes before and after, the plan), which the
emitters and reports can read. A graph already carrying a plan is left alone.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphopt.analysis.sensitivity import outputs_sqnr, weight_sensitivity
from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.quantize_weights import QuantizeWeights
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_qdq import expand

PRECISIONS = ("int4", "int8", "fp16", "fp32")  # narrowest first
METADATA_KEY = "mixed_precision"
DEFAULT_SQNR_DB = 30.0  # the budget when none is given
MEASURE_SETS = 4  # seeded random input sets when no calibration data is given


@dataclass(frozen=True)
class _Layer:
    param: str
    node: str
    target: object  # quantize_weights._Target
    bytes: dict[str, int]  # precision -> weight bytes (integers, scales, zero points)
    values: dict[str, np.ndarray]  # precision -> the float values it computes with


@register_pass
@dataclass(frozen=True)
class MixedPrecision(Pass):
    """Per-layer weight precision (int4/int8/fp16/fp32) meeting an SQNR or accuracy budget at the fewest bytes."""

    name: ClassVar[str] = "mixed-precision"
    budget_sqnr: float | None = None
    budget_accuracy: float | None = None
    candidates: tuple[str, ...] = ("int4", "int8", "fp16")
    group: int = 128
    skip: tuple[str, ...] = ()

    def __post_init__(self):
        if self.budget_sqnr is not None and self.budget_accuracy is not None:
            raise ValueError("give one of budget-sqnr (dB) and budget-accuracy (a score of ctx.evaluation), not both")
        unknown = [c for c in self.candidates if c not in PRECISIONS]
        if unknown or not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates {list(self.candidates)}: give distinct ones of {', '.join(PRECISIONS)}")
        if self.group < 1:
            raise ValueError(f"group must be at least 1, got {self.group}")

    @property
    def ladder(self) -> tuple[str, ...]:
        """The candidates, narrowest first."""
        return tuple(p for p in PRECISIONS if p in self.candidates)

    @property
    def sqnr_goal(self) -> float | None:
        """The output SQNR budget in dB (DEFAULT_SQNR_DB when no budget is given), None for an accuracy budget."""
        if self.budget_accuracy is not None:
            return None
        return DEFAULT_SQNR_DB if self.budget_sqnr is None else self.budget_sqnr

    @property
    def budget(self) -> str:
        if self.sqnr_goal is not None:
            return f"output SQNR >= {self.sqnr_goal:g} dB"
        return f"evaluation >= {self.budget_accuracy:g}"

    def tolerance(self) -> Tolerance:
        # the budget holds on the calibration data; the verifier's seeded inputs may differ, so the bound is loose
        return Tolerance.bounded(min_sqnr_db=4.0)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if METADATA_KEY in graph.metadata:
            return PassResult(graph, False, {"plan": "already mixed-precision (graph metadata)"})
        if self.budget_accuracy is not None and ctx.evaluation is None:
            raise PassError(
                f"{self.name}: budget-accuracy needs an evaluation set: give PassContext(evaluation=fn), fn(graph) -> "
                f"score (higher is better, e.g. accuracy on labelled data); or use budget-sqnr"
            )
        layers = self._layers(graph)
        if not layers:
            return PassResult(graph, False, {"plan": "no float conv/linear/matmul weight"})
        inputs = list(ctx.calibration_sets(graph, MEASURE_SETS))
        reference = [graph.run(x) for x in inputs]
        variants = {la.param: {p: v for p, v in la.values.items() if p != "fp32"} for la in layers}
        alone = weight_sensitivity(graph, variants, inputs)
        for la in layers:
            alone[la.param]["fp32"] = float("inf")
        path = self._path(layers, alone)

        measured: dict[int, float] = {}

        def measure(i: int) -> float:
            if i not in measured:
                work = graph.copy()
                self._apply(work, layers, path[i])
                measured[i] = (
                    outputs_sqnr(reference, [work.run(x) for x in inputs])
                    if self.budget_accuracy is None
                    else float(ctx.evaluation(work))
                )
            return measured[i]

        goal = self.sqnr_goal if self.sqnr_goal is not None else self.budget_accuracy
        best = measure(len(path) - 1)
        if not best >= goal:
            raise PassError(
                f"{self.name}: no plan meets the budget {self.budget}: the best reachable is {best:.4g} "
                f"(every layer at {self.ladder[-1]}); add a wider candidate or lower the budget"
            )
        lo, hi = 0, len(path) - 1  # path[hi] meets the budget
        while lo < hi:
            mid = (lo + hi) // 2
            if measure(mid) >= goal:
                hi = mid
            else:
                lo = mid + 1
        plan = path[hi]
        before = sum(la.bytes["fp32"] for la in layers)
        self._apply(graph, layers, plan)
        rows = [
            {
                "node": la.node,
                "param": la.param,
                "precision": plan[la.param],
                "bytes": la.bytes[plan[la.param]],
                "sqnr_db_alone": round(float(alone[la.param][plan[la.param]]), 2),
            }
            for la in layers
        ]
        after = sum(r["bytes"] for r in rows)
        reached = round(float(measured[hi]), 4)
        graph.metadata[METADATA_KEY] = {
            "budget": self.budget,
            "reached": reached,
            "weight_bytes_before": before,
            "weight_bytes_after": after,
            "plans_measured": len(measured),
            "plan": rows,
        }
        if ctx.log:
            for r in rows:
                ctx.log(f"{self.name}: {r['node']:<24} {r['precision']:<5} {r['bytes']:>10} B  {r['sqnr_db_alone']} dB")
            ctx.log(f"{self.name}: {self.budget}: reached {reached}; weights {before} B -> {after} B")
        counts = {p: sum(r["precision"] == p for r in rows) for p in self.ladder}
        stats = {"layers": counts, "reached": reached, "weight_bytes": [before, after], "plan": rows}
        return PassResult(graph, any(r["precision"] != "fp32" for r in rows), stats)

    # ---- layers and their candidates ------------------------------------------------------------

    def _quantizer(self, precision: str) -> QuantizeWeights:
        if precision == "int4":
            return QuantizeWeights(bits=4, group=self.group, skip=self.skip)
        return QuantizeWeights(bits=8, scales="per-channel", skip=self.skip)

    def _layers(self, graph: Graph) -> list[_Layer]:
        missing = [s for s in self.skip if not graph.has_node(s)]
        if missing:
            raise PassError(f"{self.name}: skip names {missing}, which are not nodes of graph '{graph.name}'")
        targets, _ = self._quantizer("int8").targets(graph)
        layers = []
        for t in targets:
            w = graph.param(t.param).data
            values = {"fp32": w.astype(np.float32)}
            nbytes = {"fp32": int(w.size) * 4}
            for p in self.ladder:
                if p in ("int4", "int8"):
                    q = self._quantizer(p)
                    axis, block = q.layout(w.shape, t)
                    ints, scale, zero = q.quantize_array(w.astype(np.float64), axis, block)
                    s = expand(scale.astype(np.float32), w.shape, axis, block)
                    z = expand(zero.astype(np.float32), w.shape, axis, block)
                    values[p] = ((ints.astype(np.float32) - z) * s).astype(np.float32)
                    nbytes[p] = sum(TensorType.of(a).nbytes for a in (ints, scale, zero))
                elif p == "fp16":
                    values[p] = w.astype(np.float16).astype(np.float32)
                    nbytes[p] = int(w.size) * 2
            layers.append(_Layer(t.param, t.node.name, t, nbytes, values))
        return layers

    # ---- the greedy path -----------------------------------------------------------------------

    def _path(self, layers: list[_Layer], alone: dict[str, dict[str, float]]) -> list[dict[str, str]]:
        """Plans from every layer at its narrowest candidate to every layer at its widest, one move per step."""
        ladder = self.ladder

        def noise(la: _Layer, level: int) -> float:
            db = alone[la.param][ladder[level]]
            return 0.0 if db == float("inf") else 10.0 ** (-db / 10.0)

        def best_move(k: int, level: int):
            # the wider level with the most noise removed per byte added (ties: the narrower)
            la, moves = layers[k], []
            for j in range(level + 1, len(ladder)):
                added = max(la.bytes[ladder[j]] - la.bytes[ladder[level]], 1)
                moves.append(((noise(la, level) - noise(la, j)) / added, -j))
            if not moves:
                return None
            gain, neg_j = max(moves)
            return (-gain, k, -neg_j)

        levels = [0] * len(layers)
        plans = [{la.param: ladder[0] for la in layers}]
        heap = [m for k in range(len(layers)) if (m := best_move(k, 0)) is not None]
        heapq.heapify(heap)
        while heap:
            _, k, j = heapq.heappop(heap)
            levels[k] = j
            plans.append({**plans[-1], layers[k].param: ladder[j]})
            if (m := best_move(k, j)) is not None:
                heapq.heappush(heap, m)
        return plans

    # ---- rewriting -----------------------------------------------------------------------------

    def _apply(self, graph: Graph, layers: list[_Layer], plan: dict[str, str]) -> None:
        for la in layers:
            precision = plan[la.param]
            if precision in ("int4", "int8"):
                self._quantizer(precision).quantize_target(graph, la.target)
            elif precision == "fp16":
                # w => cast(w_fp16){dtype=float32}
                half = graph.add_param(
                    f"{la.param}.fp16", graph.param(la.param).data.astype(np.float16), trainable=False
                )
                cast = graph.add_node("cast", [half], attrs={"dtype": "float32"}, name=f"{la.param}.cast")
                for reader in list(graph.users(la.param)):
                    graph.set_inputs(reader, [cast.output if v == la.param else v for v in reader.inputs])
        graph.cleanup()
