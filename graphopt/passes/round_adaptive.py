"""round-adaptive: AdaRound (Nagel et al. 2020), learned up/down rounding of quantized weights.

    # dequantize(round(w / s), s, 0) => dequantize(floor(w / s) + h, s, 0),  h in {0, 1} per weight, learned

Rounding each weight to the nearest grid point minimises the weight error, not
the layer's output error. AdaRound chooses, per weight, to round down or up so
that the layer's output on calibration data stays closest to the float layer's.
For each conv/linear whose weight is a dequantized integer parameter, in graph
order: the rounding is relaxed to floor(w / s) + h(V), h the rectified sigmoid
clip(sigmoid(V) * 1.2 - 0.1, 0, 1), V initialised so h(V) equals the
fractional part; Adam minimises
    ||layer(x_q; W~) - layer_float(x)||^2 (summed over channels, mean elsewhere)
    + reg * sum(1 - |2 h(V) - 1|^beta)
where x_q is the layer's input in the quantized graph (earlier layers already
rounded, so their error propagates), layer_float(x) the float layer's output in
the float graph, and beta anneals from `beta_start` to `beta_end` after a
`warmup` share of the `iterations` without the regulariser, which drives h to 0
or 1. The final rounding is h = [V >= 0]; when it does not reach a lower output
error on the calibration data than the rounding already there, the layer is
left as it was. Scales and zero points are kept, so the bias grid (s_x * s_w)
stays valid.

The float weights come from `PassContext.reference` (the graph right before
`quantize`; see `weight_qdq.FloatReference`). The integer range comes from the
weight's dtype and data (int8 [-127, 127] from `quantize`, int4 [-7, 7] from
`quantize-weights`). One progress line per layer goes to `ctx.log`
(and a `graphopt.progress` bar over all steps on a terminal). Stats:
`layers`, `kept_nearest` (layers where AdaRound did not help), `flipped` (share of
weights rounded the other way), `calibration`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from graphopt.errors import PassError
from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import get_op
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.correct_bias import take_samples
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_qdq import QuantizedWeight, expand, float_reference, quantized_weights, round_to_grid
from graphopt.progress import progress_bar

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch


@register_pass
@dataclass(frozen=True)
class RoundAdaptive(Pass):
    """Learn each quantized conv/linear weight's up/down rounding on calibration data (AdaRound), layer by layer."""

    name: ClassVar[str] = "round-adaptive"
    iterations: int = 500
    batch: int = 32
    lr: float = 1e-2
    reg: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    samples: int = 512
    seed: int = 0

    def __post_init__(self):
        for field, value in (("iterations", self.iterations), ("batch", self.batch), ("samples", self.samples)):
            if value < 1:
                raise ValueError(f"{self.name}: {field} must be at least 1, got {value}")
        if not (self.lr > 0 and self.reg >= 0 and 0 <= self.warmup < 1):
            raise ValueError(f"{self.name}: needs lr > 0, reg >= 0 and warmup in [0, 1)")
        if not self.beta_start >= self.beta_end > 0:
            raise ValueError(f"{self.name}: needs beta-start >= beta-end > 0")

    def tolerance(self) -> Tolerance:
        return Tolerance.bounded(min_sqnr_db=12.0)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        targets = quantized_weights(graph)
        if not targets:
            return PassResult(graph, False, {"layers": 0, "reason": "no conv/linear reads a quantized weight"})
        floats = {qw.node: float_reference(ctx.reference, graph, qw, self.name) for qw in targets}
        source = "calibration data" if ctx.calibration is not None else "seeded random inputs (no calibration data)"
        sets = take_samples(graph, ctx.calibration_sets(graph), self.samples)
        outputs = _capture(ctx.reference, sets, [ctx.reference.node(qw.node).output for qw in targets])
        changed, kept, flipped, total = False, 0, 0, 0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thousands of small steps: one thread is faster and steady on a busy machine
        bar = progress_bar(total=len(targets) * self.iterations, desc=self.name, unit="step")
        try:
            for i, qw in enumerate(targets, 1):
                started = time.perf_counter()
                node = graph.node(qw.node)
                target = outputs[ctx.reference.node(qw.node).output]
                bar.set_postfix_str(node.name, refresh=False)
                before, after, ints = self.round_layer(graph, node, qw, floats[qw.node], sets, target, bar=bar)
                old = graph.param(qw.q).data
                if after < before:
                    moved = int(np.count_nonzero(ints.astype(np.int64) != old.astype(np.int64)))
                    if moved:
                        graph.set_param(qw.q, ints)
                        changed = True
                    flipped += moved
                else:
                    kept += 1
                total += old.size
                if ctx.log:
                    verdict = "" if after < before else " (kept the existing rounding)"
                    ctx.log(
                        f"{self.name}: layer {i}/{len(targets)} {node.name}: output MSE {before:.4g} -> {after:.4g}"
                        f"{verdict} ({time.perf_counter() - started:.1f} s)"
                    )
        finally:
            bar.close()
            torch.set_num_threads(threads)
        stats = {"layers": len(targets), "kept_nearest": kept, "flipped": round(flipped / max(total, 1), 4)}
        stats["calibration"] = f"{source}: {sum(s[0].shape[0] for s in sets)} samples in {len(sets)} sets"
        return PassResult(graph, changed, stats)

    def round_layer(
        self, graph: Graph, node: Node, qw: QuantizedWeight, w: np.ndarray, sets, target: np.ndarray, *, bar=None
    ):
        """(output MSE of the current rounding, of AdaRound's, AdaRound's integers) for one layer.

        bar: a `graphopt.progress` bar advanced once per optimization step.
        """
        bias = _bias(graph, node)
        x = torch.from_numpy(_capture(graph, sets, [node.inputs[0]])[node.inputs[0]])
        y = torch.from_numpy(target)
        layer = functools.partial(get_op(node.op).impl, **dict(node.attrs))
        channel = 1 if node.op == "conv" else y.dim() - 1
        s, z = (_expanded(graph, name, qw, w.shape) for name in (qw.scale, qw.zero_point))
        scaled = torch.from_numpy(w.astype(np.float32)) / s
        low = torch.floor(scaled)
        rest = (scaled - low).clamp(1e-4, 1 - 1e-4)
        v = torch.log((rest - GAMMA) / (ZETA - rest)).requires_grad_(True)  # h(v) == rest

        def weight(h):
            return (torch.clamp(low + h + z, qw.qmin, qw.qmax) - z) * s

        def recon(wq, rows=slice(None)):
            out = layer(x[rows], wq, bias)
            return (out - y[rows]).pow(2).sum(channel).mean()

        current = torch.from_numpy(graph.param(qw.q).data.astype(np.float32))
        with torch.no_grad():
            before = float(recon((current - z) * s))
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam([v], lr=self.lr)
        start = int(self.warmup * self.iterations)
        for step in range(self.iterations):
            rows = torch.randint(0, x.shape[0], (min(self.batch, x.shape[0]),), generator=gen)
            h = _rectified_sigmoid(v)
            loss = recon(weight(h), rows)
            if step >= start and self.reg:
                frac = (step - start) / max(self.iterations - start, 1)
                beta = self.beta_end + (self.beta_start - self.beta_end) * (1 - frac)
                loss = loss + self.reg * (1 - (2 * h - 1).abs().pow(beta)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update()
        up = (v.detach() >= 0).numpy().astype(np.float64)
        ints = round_to_grid(graph, qw, w, up=up)
        with torch.no_grad():
            after = float(recon(weight(torch.from_numpy(up.astype(np.float32)))))
        return before, after, ints


def _expanded(graph: Graph, name: str, qw: QuantizedWeight, shape) -> torch.Tensor:
    data = graph.param(name).data.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(expand(data, shape, qw.axis, qw.block_size)))


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _capture(graph: Graph, sets, values: list[str]) -> dict[str, np.ndarray]:
    """Each value over every input set, concatenated along the batch."""
    parts: dict[str, list[np.ndarray]] = {v: [] for v in values}
    for feeds in sets:
        _, captured = graph.run(feeds, capture=values)
        for v in values:
            parts[v].append(np.asarray(captured[v], np.float32))
    return {v: np.concatenate(p) for v, p in parts.items()}


def _bias(graph: Graph, node: Node) -> torch.Tensor | None:
    """The layer's bias as the graph computes it (a parameter, or a dequantized parameter), or None."""
    if len(node.inputs) < 3:
        return None
    b = node.inputs[2]
    if graph.is_param(b):
        return torch.from_numpy(graph.param(b).data.astype(np.float32))
    producer = graph.producer(b)
    if producer is None or not all(graph.is_param(v) for v in producer.inputs):
        raise PassError(f"round-adaptive: the bias of '{node.name}' is computed from activations")
    args = [torch.from_numpy(np.asarray(graph.param(v).data).astype(np.float64)) for v in producer.inputs]
    return get_op(producer.op).impl(*args, **dict(producer.attrs)).float()
