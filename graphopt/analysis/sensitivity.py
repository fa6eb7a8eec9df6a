"""Quantization sensitivity: the output SQNR when only one layer is quantized.

`sensitivity(graph, calibration)` calibrates every candidate value once, then
for each node the quantize pass would touch, quantizes that node alone (its
weights and activation inputs; its output only feeds float ops then, so it
stays float) on a copy of the graph and measures the
SQNR of the graph's outputs against the float graph on `inputs` (the
calibration sets when not given). Rows come sorted, most sensitive first;
`SensitivityReport.table()` prints them. The graph is never modified.

`weight_sensitivity(graph, variants, inputs)` does the same for weight-only
changes (mixed precision's candidates): the output SQNR with one parameter's
values replaced by each variant (its int4/int8/fp16 round trip), the others
kept. Parameters are swapped into one torch module of the graph
(`torch.func.functional_call`), so a model with many layers and candidates
is emitted once, not once per variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from graphopt.ir.graph import Graph
from graphopt.passes.base import sqnr_db
from graphopt.passes.context import PassContext


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op: str
    sqnr_db: float


@dataclass(frozen=True)
class SensitivityReport:
    rows: tuple[LayerSensitivity, ...]  # lowest SQNR (most sensitive) first
    all_quantized_db: float  # every layer quantized at once

    def table(self) -> str:
        width = max([len("node"), *(len(r.node) for r in self.rows)])
        lines = [f"{'node':<{width}}  {'op':<7}  SQNR (dB)"]
        lines += [f"{r.node:<{width}}  {r.op:<7}  {r.sqnr_db:9.2f}" for r in self.rows]
        lines.append(f"{'(all layers)':<{width}}  {'':<7}  {self.all_quantized_db:9.2f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def sensitivity(
    graph: Graph,
    calibration: Iterable[Sequence[np.ndarray]] | None,
    *,
    options: str | dict | None = None,
    inputs: Sequence[Sequence[np.ndarray]] | None = None,
    seed: int = 0,
) -> SensitivityReport:
    """Per-layer output SQNR with only that layer quantized, sorted most sensitive first.

    options: the quantize pass's options, as text (`"calibrate=mse dtype=uint8"`) or a dict.
    calibration: input sets to calibrate on (None: seeded random inputs, as the pass does).
    inputs: input sets to measure on; the calibration sets when None.
    """
    from graphopt.passes.pipeline import Pipeline
    from graphopt.passes.quantize import Quantize

    if isinstance(options, dict):
        qpass = Quantize(**options)
    else:
        (qpass,) = Pipeline.parse(f"quantize{{{options}}}" if options else "quantize").passes
    calibration = None if calibration is None else [list(s) for s in calibration]
    ctx = PassContext(seed=seed, calibration=calibration)
    plan = qpass.plan(graph)
    if not plan.nodes:
        raise ValueError(f"graph '{graph.name}' has no layer left to quantize ({plan.skipped})")
    ranges, _ = qpass.ranges(graph, plan, ctx)
    measure = [list(s) for s in inputs] if inputs is not None else list(ctx.calibration_sets(graph, 2))
    reference = [graph.run(x) for x in measure]

    def output_sqnr(g: Graph) -> float:
        return outputs_sqnr(reference, [g.run(x) for x in measure])

    rows = []
    for node in plan.nodes:
        work = graph.copy()
        qpass.apply(work, qpass.plan(work, only={node.name}), ranges)
        rows.append(LayerSensitivity(node.name, node.op, output_sqnr(work)))
    everything = graph.copy()
    qpass.apply(everything, qpass.plan(everything), ranges)
    return SensitivityReport(tuple(sorted(rows, key=lambda r: r.sqnr_db)), output_sqnr(everything))


def outputs_sqnr(reference: Sequence[Sequence[np.ndarray]], outputs: Sequence[Sequence[np.ndarray]]) -> float:
    """SQNR (dB) of all `outputs` against `reference`, each a list of output lists (one per input set)."""
    ref = np.concatenate([np.ravel(a) for r in reference for a in r])
    return sqnr_db(ref, np.concatenate([np.ravel(a) for o in outputs for a in o]))


def weight_sensitivity(
    graph: Graph, variants: Mapping[str, Mapping[str, np.ndarray]], inputs: Sequence[Sequence[np.ndarray]]
) -> dict[str, dict[str, float]]:
    """{parameter: {variant: output SQNR (dB)}} with only that parameter replaced by that variant's values."""
    from graphopt.backends.reference import needs_onnxruntime
    from graphopt.backends.torch import run_module
    from graphopt.emit.torch import emit_torch
    from graphopt.ir.types import to_torch_tensor

    for name in variants:
        graph.param(name)  # unknown names are an error here, not a KeyError later
    reference = [graph.run(x) for x in inputs]
    if needs_onnxruntime(graph):  # no torch module: one graph copy per variant

        def run(name: str, data: np.ndarray) -> list[list[np.ndarray]]:
            work = graph.copy()
            work.set_param(name, data)
            return [work.run(x) for x in inputs]

    else:
        module = emit_torch(graph)
        attrs = module.param_names

        def run(name: str, data: np.ndarray) -> list[list[np.ndarray]]:
            swap = {attrs[name]: to_torch_tensor(np.asarray(data, graph.param(name).data.dtype))}
            call = _SwappedModule(module, swap)
            return [run_module(call, x) for x in inputs]

    return {name: {v: outputs_sqnr(reference, run(name, d)) for v, d in by.items()} for name, by in variants.items()}


class _SwappedModule(torch.nn.Module):
    """`module` called with some of its parameters/buffers replaced (functional_call; the module is not changed)."""

    def __init__(self, module: torch.nn.Module, swap: dict[str, torch.Tensor]):
        super().__init__()
        self.inner, self.swap = module, swap

    def forward(self, *args):
        return torch.func.functional_call(self.inner, self.swap, args)
