"""correct-bias: empirical bias correction of quantized conv/linear layers (Nagel et al. 2019, as in AIMET).

    # conv(x_q, dq(w_int), b) => conv(x_q, dq(w_int), b + E[float output] - E[quantized output])   (per channel)

Quantizing weights shifts the mean of a layer's output (E[(W - W_q) x] is not
zero), and the shift adds up through the network. This pass runs the float
graph and the quantized graph on the same calibration data and, layer by layer
in graph order, adds to each quantized layer's bias the per-output-channel
difference between the mean output of the float layer (float inputs) and of the
quantized layer (quantized inputs, earlier corrections applied): errors that
propagate from earlier layers are corrected too.

Design: a quantized graph keeps only the integer weights, so the float
reference cannot be rebuilt from it. The pass reads it from
`PassContext.reference` (the graph right before `quantize`; layers are matched by
node name, which quantize keeps); `correct_bias(graph, reference, sets)` is
the same step as a function. Targets are conv/linear layers whose weight is a
dequantized integer parameter. A bias stored as `dequantize(int32, s, 0)` gets
new integers on its grid; a float bias is updated in place; a layer without a
bias gets one (int32 at s_x * s_w, as `quantize` writes it, when its input is a
per-tensor dequantize and its weight is per channel; float otherwise).
Calibration: `ctx.calibration` (at most `samples` rows), else seeded random
inputs, as the stats say. Stats: `corrected` layers, `largest_shift`,
`calibration`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphopt.errors import PassError
from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_qdq import QuantizedWeight, quantized_weights
from graphopt.quant.calibrate import check_calibration_set


@register_pass
@dataclass(frozen=True)
class CorrectBias(Pass):
    """Correct each quantized conv/linear bias by the mean output shift against the float graph (ctx.reference)."""

    name: ClassVar[str] = "correct-bias"
    samples: int = 512

    def __post_init__(self):
        if self.samples < 1:
            raise ValueError(f"{self.name}: samples must be at least 1, got {self.samples}")

    def tolerance(self) -> Tolerance:
        return Tolerance.bounded(min_sqnr_db=12.0)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if not quantized_weights(graph):
            return PassResult(graph, False, {"corrected": 0, "reason": "no conv/linear reads a quantized weight"})
        if ctx.reference is None:
            raise PassError(
                f"{self.name}: needs the float graph the quantized graph came from; pass it as "
                f"PassContext(reference=float_graph)"
            )
        source = "calibration data" if ctx.calibration is not None else "seeded random inputs (no calibration data)"
        sets = take_samples(graph, ctx.calibration_sets(graph), self.samples)
        log = (lambda line: ctx.log(f"{self.name}: {line}")) if ctx.log else None
        stats = correct_bias(graph, ctx.reference, sets, log=log)
        stats["calibration"] = f"{source}: {sum(s[0].shape[0] for s in sets)} samples in {len(sets)} sets"
        return PassResult(graph, stats["corrected"] > 0, stats)


def take_samples(graph: Graph, sets: Iterable[Sequence[np.ndarray]], samples: int) -> list[list[np.ndarray]]:
    """Checked input sets until `samples` rows are taken."""
    out, seen = [], 0
    for i, raw in enumerate(sets):
        feeds = check_calibration_set(graph, raw, i)
        out.append(feeds)
        seen += feeds[0].shape[0] if feeds and feeds[0].ndim else 1
        if seen >= samples:
            break
    if not out:
        raise PassError("the calibration set is empty: no input set was given")
    return out


def correct_bias(
    graph: Graph,
    reference: Graph,
    sets: Sequence[Sequence[np.ndarray]],
    *,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Correct, in place and in graph order, the bias of every quantized conv/linear of `graph` against `reference`."""
    targets = [qw for qw in quantized_weights(graph) if _matches(reference, graph, qw)]
    missing = [qw.node for qw in quantized_weights(graph) if qw not in targets]
    if missing:
        raise PassError(
            f"correct-bias: layers {missing} of graph '{graph.name}' have no layer of the same name, op and output "
            f"shape in the reference graph '{reference.name}' (give the float graph right before quantization)"
        )
    float_means = _channel_means(reference, [graph.node(qw.node) for qw in targets], sets)
    largest = 0.0
    for i, qw in enumerate(targets, 1):
        node = graph.node(qw.node)
        shift = float_means[node.output] - _channel_means(graph, [node], sets)[node.output]
        _add_to_bias(graph, node, shift)
        largest = max(largest, float(np.max(np.abs(shift))))
        if log:
            log(f"layer {i}/{len(targets)} {node.name}: mean |shift| {np.mean(np.abs(shift)):.3g}")
    return {"corrected": len(targets), "largest_shift": largest}


def _matches(reference: Graph, graph: Graph, qw: QuantizedWeight) -> bool:
    if not reference.has_node(qw.node):
        return False
    other, node = reference.node(qw.node), graph.node(qw.node)
    return other.op == node.op and reference.type_of(other.output) == graph.type_of(node.output)


def _channel_axis(graph: Graph, node: Node) -> int:
    return 1 if node.op == "conv" else graph.type_of(node.output).rank - 1


def _channel_means(graph: Graph, nodes: list[Node], sets) -> dict[str, np.ndarray]:
    """Mean of each node's output per output channel over every input set."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    names = [n.output for n in nodes]
    axes = {n.output: _channel_axis(graph, n) for n in nodes}
    for feeds in sets:
        _, captured = graph.run(feeds, capture=names)
        for v, x in captured.items():
            x = np.moveaxis(np.asarray(x, np.float64), axes[v], -1)
            x = x.reshape(-1, x.shape[-1])
            sums[v] = sums.get(v, 0.0) + x.sum(axis=0)
            counts[v] = counts.get(v, 0) + x.shape[0]
    return {v: sums[v] / counts[v] for v in names}


def _add_to_bias(graph: Graph, node: Node, shift: np.ndarray) -> None:
    """node's bias += shift, on the bias's integer grid when it is a dequantized int32 only this node reads."""
    if len(node.inputs) < 3:
        graph.set_inputs(node, [*node.inputs, _new_bias(graph, node, shift)])
        return
    b = node.inputs[2]
    own = len(graph.users(b)) == 1 and b not in graph.outputs
    if graph.is_param(b):
        data = graph.param(b).data
        corrected = (data.astype(np.float64) + shift).astype(data.dtype)
        if own:
            graph.set_param(b, corrected)
        else:  # shared with another node: this one gets its own copy
            graph.set_input(node, 2, graph.add_param(b, corrected))
        return
    dq = graph.producer(b)
    if dq is None or dq.op != "dequantize" or not all(graph.is_param(v) for v in dq.inputs):
        raise PassError(f"correct-bias: the bias of '{node.name}' is computed, not a parameter; cannot correct it")
    q, s, z = (graph.param(v).data.astype(np.float64) for v in dq.inputs)
    scale = np.broadcast_to(s, shift.shape)
    ints = q + np.round(shift / scale)
    if own and len(graph.users(dq.inputs[0])) == 1 and graph.param(dq.inputs[0]).data.dtype == np.int32:
        if np.all(np.abs(ints) < 2**31 - 1):
            graph.set_param(dq.inputs[0], ints.astype(np.int32))
            return
    graph.set_input(node, 2, graph.add_param(f"{node.name}.bias", ((q - z) * s + shift).astype(np.float32)))


def _new_bias(graph: Graph, node: Node, shift: np.ndarray) -> str:
    # conv(x, w) => conv(x, w, dequantize(round(shift / (s_x * s_w)) as int32, s_x * s_w, 0))
    base = f"{node.inputs[1].removesuffix('.dq')}.bias" if node.inputs[1].endswith(".dq") else f"{node.name}.bias"
    x, w = graph.producer(node.inputs[0]), graph.producer(node.inputs[1])
    per_tensor_x = x is not None and x.op == "dequantize" and graph.is_param(x.inputs[1])
    per_tensor_x = per_tensor_x and graph.param(x.inputs[1]).data.ndim == 0
    if per_tensor_x and w.attrs["axis"] in (0, None) and not w.attrs["block_size"]:
        scale = (graph.param(x.inputs[1]).data * graph.param(w.inputs[1]).data).astype(np.float32)
        scale = np.broadcast_to(scale, shift.shape).astype(np.float32)
        ints = np.round(shift / scale.astype(np.float64))
        if np.all(np.abs(ints) < 2**31 - 1):
            ins = [
                graph.add_param(f"{base}.int32", ints.astype(np.int32), trainable=False),
                graph.add_param(f"{base}.scale", scale, trainable=False),
                graph.add_param(f"{base}.zero_point", np.zeros(shift.shape, np.int32), trainable=False),
            ]
            return graph.add_node("dequantize", ins, attrs={"axis": 0}, name=f"{base}.dq").output
    return graph.add_param(base, shift.astype(np.float32))
