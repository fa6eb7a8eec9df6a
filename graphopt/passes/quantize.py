"""quantize: post-training int8 quantization with quantize/dequantize (Q/DQ) nodes.

Targets are conv, linear, matmul (attention included), add and concat (`ops`).
For each target that is not skipped:
- a float weight parameter becomes an int8 parameter feeding `dequantize`:
  symmetric over [-127, 127], per output channel (axis 0) or per tensor; a
  matmul's parameter operand is per tensor. `weights-bits=4` makes it int4
  over [-7, 7] instead (stored two per byte; W4A8 with `activations-bits=8`,
  the only activation width: int8/uint8 per `dtype`); ONNX needs opset 21 for it;
- a conv/linear bias becomes int32 at scale s_x * s_w feeding `dequantize`
  (what onnxruntime's integer kernels expect);
- every float activation it reads gets a per-tensor quantize -> dequantize
  pair of `dtype`, with scale and zero point as parameters of those nodes; so
  does its own output (`outputs=true`) where that output reaches another
  quantized op directly or only through ops that carry int8 values unchanged
  or nearly so (`CARRIES_INT8`: relu, clip, pooling, reshape, permute, ...),
  which lets onnxruntime fuse the op into its integer kernel. Where the output's
  only reader is a relu or clip (`FOLDED_ACTIVATIONS`), the pair goes after that
  activation instead: integer runtimes fold it into the op as a clamp, and one
  rounding over the activation's range beats two (MobileNetV2: 30.9 -> 32.5 dB SQNR). An output read
  by an op that runs in float (GELU, softmax, layer norm, a scale `mul`, an
  add kept float) is left alone: a round trip there only adds error (on
  all-MiniLM-L6-v2 it took the embeddings' cosine from 0.98 to 0.81). A value
  gets one pair, shared by the readers that take the quantized form; graph
  outputs stay float. The inputs and output of a concat share one scale, so
  it concatenates integers unchanged.
- symmetric=auto (the default) quantizes a value symmetrically (zero point 0)
  when its calibrated range is roughly symmetric and asymmetrically otherwise
  (`quant.scales.is_symmetric`): one-sided values (after ReLU, GELU, softmax)
  keep all 256 levels instead of half.

    # conv(x, w, b) => dq(q(conv(dq(q(x, s_x)), dq(w_int8, s_w), dq(b_int32, s_x*s_w))))

Ranges come from calibration: the graph runs on `ctx.calibration` (at most
`samples` rows) while an observer (`calibrate`) watches each value; without
calibration data it uses seeded random inputs and says so in its stats and log.
A target already reading a `dequantize` is left alone, so a second run changes
nothing. Stats: `quantized` nodes, `skipped` nodes with `skipped_reasons`,
`calibrator`, `calibration` (where the ranges came from).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.quant.calibrate import calibrate_ranges
from graphopt.quant.scales import activation_qparams, weight_qparams

TARGETS = ("conv", "linear", "matmul", "add", "concat")
WEIGHTED = ("conv", "linear")
# ops that move or select int8 values (or average them, for pools), so a Q/DQ before them is one an
# integer runtime uses; an op's output is quantized only when it reaches a quantized op through these
CARRIES_INT8 = frozenset(
    ("relu", "clip", "max_pool", "adaptive_max_pool", "avg_pool", "adaptive_avg_pool", "reshape", "flatten")
    + ("permute", "squeeze", "unsqueeze", "slice", "split", "select", "expand", "dropout", "identity")
)
# activations an integer conv/matmul applies as a clamp on its requantized output (ORT QLinearConv, TVM qdq-to-integer)
FOLDED_ACTIVATIONS = frozenset(("relu", "clip"))
MAX_RANDOM_SETS = 16


@dataclass
class _Plan:
    nodes: list[Node]
    skipped: dict[str, str]
    readers: dict[str, list[Node]]  # value -> readers that take its quantized form

    def values(self) -> list[str]:
        return [v for v, r in self.readers.items() if r]


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """Insert int8/uint8 quantize/dequantize on weights and activations, calibrated on ctx.calibration.

    dtype: activation dtype (weights are always symmetric int8). weights: per-channel
    or per-tensor scales. symmetric: activations symmetric around zero (true),
    asymmetric (false), or chosen per value from its range (auto). calibrate:
    range observer (minmax, percentile, entropy, mse). samples: calibration rows.
    skip: node names kept in float. skip_first_last: keep the first and last
    conv/linear in float. ops: the op kinds quantized. outputs: quantize their
    outputs too where they reach another quantized op (onnxruntime fuses a float
    op into its integer kernel only when a quantize follows it). weights-bits:
    8 (int8) or 4 (int4, packed). activations-bits: 8.
    """

    name: ClassVar[str] = "quantize"
    dtype: Literal["int8", "uint8"] = "int8"
    weights: Literal["per-channel", "per-tensor"] = "per-channel"
    activations: Literal["per-tensor"] = "per-tensor"
    symmetric: bool | Literal["auto"] = "auto"
    calibrate: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    percentile: float = 99.99
    samples: int = 128
    skip: tuple[str, ...] = ()
    skip_first_last: bool = False
    ops: tuple[str, ...] = TARGETS
    outputs: bool = True
    weights_bits: int = 8
    activations_bits: int = 8

    def __post_init__(self):
        if self.weights_bits not in (4, 8):
            raise ValueError(f"weights-bits must be 4 or 8, got {self.weights_bits}")
        if self.activations_bits != 8:
            raise ValueError(f"activations-bits must be 8 (int8/uint8 activations), got {self.activations_bits}")
        unknown = [op for op in self.ops if op not in TARGETS]
        if unknown:
            raise ValueError(f"ops {unknown} cannot be quantized; choose from {', '.join(TARGETS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile {self.percentile} must lie in (0, 100]")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")

    def tolerance(self) -> Tolerance:
        # int8 with calibrated ranges keeps outputs ~20 dB or better; the verifier's inputs
        # may come from another distribution than the calibration data, so the bound is loose.
        # 4-bit weights: 15 levels per channel, ~24 dB less per layer.
        return Tolerance.bounded(min_sqnr_db=12.0 if self.weights_bits == 8 else 4.0)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        plan = self.plan(graph)
        stats = {"quantized": len(plan.nodes), "skipped": len(plan.skipped), "skipped_reasons": plan.skipped}
        stats["calibrator"] = self.calibrate
        half = {name: why for name, why in plan.skipped.items() if why.startswith("computes in ")}
        if not plan.nodes and half:
            (name, why), more = next(iter(half.items())), f" (and {len(half) - 1} more)" if len(half) > 1 else ""
            raise GraphoptError(
                f"quantize: node '{name}' {why}{more}: int8 quantization starts from float32 ops; "
                "quantize before convert-fp16/convert-bf16"
            )
        if not plan.nodes:
            return PassResult(graph, False, stats)
        ranges, stats["calibration"] = self.ranges(graph, plan, ctx)
        self.apply(graph, plan, ranges)
        return PassResult(graph, True, stats)

    def apply(self, graph: Graph, plan: "_Plan", ranges: dict[str, tuple[float, float]]) -> None:
        """Insert the Q/DQ nodes of `plan` with activation `ranges` (from `ranges()`)."""
        scales = self._insert_activation_qdq(graph, plan, ranges)
        for node in plan.nodes:
            self._quantize_params(graph, node, scales)
        graph.cleanup()

    # ---- where ------------------------------------------------------------------------

    def plan(self, graph: Graph, only: Collection[str] | None = None) -> _Plan:
        """The nodes to quantize (all that qualify, or those named in `only`) and the values to observe."""
        missing = [s for s in self.skip if not graph.has_node(s)]
        if missing:
            raise GraphoptError(f"quantize: skip names {missing}, which are not nodes of graph '{graph.name}'")
        candidates = [n for n in graph.nodes if n.op in self.ops]
        if not candidates:
            found = ", ".join(sorted(graph.op_counts())) or "no nodes"
            raise GraphoptError(
                f"quantize: graph '{graph.name}' has nothing to quantize (no {'/'.join(self.ops)} node; it has {found})"
            )
        weighted = [n for n in candidates if n.op in WEIGHTED]
        ends = (
            {weighted[0].name: "first layer", weighted[-1].name: "last layer"}
            if self.skip_first_last and weighted
            else {}
        )
        nodes, skipped = [], {}
        for n in candidates:
            reason = self._skip_reason(graph, n) or ends.get(n.name)
            if only is not None and n.name not in only:
                reason = reason or "not selected"
            if reason:
                skipped[n.name] = reason
            else:
                nodes.append(n)
        readers: dict[str, list[Node]] = {}
        for n in nodes:
            for v in self._activation_inputs(graph, n):
                readers.setdefault(v, []).append(n)
        quantized_inputs = {(r.name, v) for v, rs in readers.items() for r in rs}
        for n in nodes if self.outputs else ():
            v = _folded_activation(graph, n.output)
            if v in graph.outputs:
                continue
            keep = [r for r in graph.users(v) if _reaches_quantized(graph, r, v, quantized_inputs)]
            readers.setdefault(v, []).extend(r for r in keep if r not in readers.get(v, ()))
        return _Plan(nodes, skipped, {v: list(dict.fromkeys(r)) for v, r in readers.items()})

    def _skip_reason(self, graph: Graph, n: Node) -> str | None:
        if n.name in self.skip:
            return "skip option"
        if any((p := graph.producer(v)) is not None and p.op in ("dequantize", "quantize") for v in n.inputs):
            return "already quantized"
        if len(n.outputs) == 1 and (t := graph.value(n.output).type) is not None and t.dtype in HALF_DTYPES:
            return f"computes in {t.dtype}"
        if len(n.outputs) != 1 or not _is_float(graph, n.output):
            return "not a float op"
        if n.op in WEIGHTED and not _is_float(graph, n.inputs[0]):
            return "not a float op"
        readers = graph.users(n.output)
        if n.op == "add" and readers and all(r.op == "layer_norm" for r in readers):
            return "residual add into layer_norm (kept float with it)"
        if not self._activation_inputs(graph, n) and not any(graph.is_param(v) for v in n.inputs):
            return "no float input"
        return None

    def _activation_inputs(self, graph: Graph, n: Node) -> list[str]:
        ins = n.inputs[:1] if n.op in WEIGHTED and graph.is_param(n.inputs[1]) else n.inputs[:2]
        return [v for v in dict.fromkeys(ins) if not graph.is_param(v) and _is_float(graph, v)]

    # ---- ranges -------------------------------------------------------------------------

    def ranges(self, graph: Graph, plan: _Plan, ctx: PassContext):
        """({value: (lo, hi)} from calibration on ctx's data, a line saying where the data came from)."""
        values = plan.values()
        if ctx.calibration is not None:
            sets, source = ctx.calibration_sets(graph), "calibration data"
        else:
            batch = _batch_size(graph)
            count = min(MAX_RANDOM_SETS, math.ceil(self.samples / batch))
            sets, source = ctx.calibration_sets(graph, count), "seeded random inputs (no calibration data given)"
            if ctx.log:
                ctx.log(f"quantize: no calibration data given; calibrating on {count} sets of seeded random inputs")
        run = calibrate_ranges(
            graph,
            values,
            sets,
            method=self.calibrate,
            dtype=self.dtype,
            symmetric=self.symmetric,
            percentile=self.percentile,
            samples=self.samples,
            log=(lambda line: ctx.log(f"quantize: {line}")) if ctx.log else None,
        )
        ranges = dict(run.ranges)
        for group in _concat_groups(graph, plan):
            lo, hi = min(ranges[v][0] for v in group), max(ranges[v][1] for v in group)
            ranges.update({v: (lo, hi) for v in group})
        return ranges, f"{source}: {run.samples} samples in {run.sets} sets"

    # ---- edits --------------------------------------------------------------------------

    def _insert_activation_qdq(self, graph: Graph, plan: _Plan, ranges) -> dict[str, np.ndarray]:
        # v => dequantize(quantize(v, s, z), s, z) for the readers that take the quantized form
        scales = {}
        for v in plan.values():
            scale, zero = activation_qparams(*ranges[v], self.dtype, self.symmetric)
            s = graph.add_param(f"{v}.scale", scale, trainable=False)
            z = graph.add_param(f"{v}.zero_point", zero, trainable=False)
            q = graph.insert_on_edge(
                v, "quantize", extra_inputs=[s, z], attrs={"dtype": self.dtype}, readers=plan.readers[v], name=f"{v}.q"
            )
            graph.insert_on_edge(q.output, "dequantize", extra_inputs=[s, z], name=f"{v}.dq")
            scales[v] = scale
        return scales

    def _quantize_params(self, graph: Graph, node: Node, scales: dict[str, np.ndarray]) -> None:
        node = graph.node(node.name)
        if node.op in WEIGHTED and graph.is_param(node.inputs[1]) and _is_float(graph, node.inputs[1]):
            axis = 0 if self.weights == "per-channel" else None
            w_scale = self._dequantized_weight(graph, node, 1, axis)
            x = graph.producer(node.inputs[0])
            if len(node.inputs) > 2 and graph.is_param(node.inputs[2]) and x is not None and x.op == "dequantize":
                self._dequantized_bias(graph, node, float(graph.param(x.inputs[1]).data) * w_scale)
        elif node.op == "matmul":
            for i, v in enumerate(node.inputs[:2]):
                if graph.is_param(v) and _is_float(graph, v):
                    self._dequantized_weight(graph, node, i, None)

    def _dequantized_weight(self, graph: Graph, node: Node, index: int, axis: int | None) -> np.ndarray:
        # w => dequantize(w_int8, s_w, 0)  (w_int4 with weights-bits=4)
        w = node.inputs[index]
        q, scale, zero = weight_qparams(graph.param(w).data, axis, self.weights_bits)
        ins = [
            graph.add_param(f"{w}.int{self.weights_bits}", q, trainable=False),
            graph.add_param(f"{w}.scale", scale, trainable=False),
            graph.add_param(f"{w}.zero_point", zero, trainable=False),
        ]
        dq = graph.add_node("dequantize", ins, attrs={"axis": axis}, name=f"{w}.dq")
        graph.set_input(node, index, dq.output)
        return scale

    def _dequantized_bias(self, graph: Graph, node: Node, scale: np.ndarray) -> None:
        # b => dequantize(round(b / (s_x * s_w)) as int32, s_x * s_w, 0)
        b = node.inputs[2]
        data = graph.param(b).data.astype(np.float64)
        scale = np.broadcast_to(np.asarray(scale, np.float32), data.shape).astype(np.float32)
        q = np.round(data / scale.astype(np.float64))
        if not np.all(np.abs(q) < 2**31 - 1):
            return  # the bias does not fit int32 at this scale: it stays float
        ins = [
            graph.add_param(f"{b}.int32", q.astype(np.int32), trainable=False),
            graph.add_param(f"{b}.scale", scale, trainable=False),
            graph.add_param(f"{b}.zero_point", np.zeros(scale.shape, np.int32), trainable=False),
        ]
        dq = graph.add_node("dequantize", ins, attrs={"axis": 0 if data.ndim else None}, name=f"{b}.dq")
        graph.set_input(node, 2, dq.output)


HALF_DTYPES = ("float16", "bfloat16")


def _is_float(graph: Graph, value: str) -> bool:
    t = graph.value(value).type
    return t is not None and t.dtype in ("float32", "float64", "float16", "bfloat16")


def _folded_activation(graph: Graph, value: str) -> str:
    """The output of the relu/clip that is `value`'s only reader, else `value` itself.

    onnxruntime and TVM fold that activation into the integer op (they clamp the requantized
    result), so the output's quantize belongs after it: one rounding, over the activation's range.
    """
    users = graph.users(value)
    if value in graph.outputs or len(users) != 1:
        return value
    act = users[0]
    if act.op not in FOLDED_ACTIVATIONS or list(act.inputs) != [value] or len(act.outputs) != 1:
        return value
    return act.output


def _reaches_quantized(graph: Graph, reader: Node, value: str, quantized_inputs: set[tuple[str, str]]) -> bool:
    """Whether `reader` takes `value` quantized, or passes it through CARRIES_INT8 ops to an op that does."""
    seen, todo = set(), [(reader, value)]
    while todo:
        node, v = todo.pop()
        if (node.name, v) in quantized_inputs:
            return True
        if node.op not in CARRIES_INT8 or node.name in seen or not node.inputs or node.inputs[0] != v:
            continue
        seen.add(node.name)
        todo.extend((user, out) for out in node.outputs for user in graph.users(out))
    return False


def _batch_size(graph: Graph) -> int:
    for v in graph.inputs:
        t = graph.type_of(v)
        if t.rank and isinstance(t.shape[0], int) and t.shape[0] > 0:
            return t.shape[0]
    return 1


def _concat_groups(graph: Graph, plan: _Plan) -> list[set[str]]:
    """Sets of quantized values that must share a scale: each concat's inputs and output, merged."""
    parent: dict[str, str] = {}

    def find(v: str) -> str:
        while parent.setdefault(v, v) != v:
            v = parent[v]
        return v

    quantized = set(plan.values())
    for n in plan.nodes:
        if n.op == "concat":
            members = [v for v in (*n.inputs, n.output) if v in quantized]
            for v in members[1:]:
                parent[find(v)] = find(members[0])
    groups: dict[str, set[str]] = {}
    for v in parent:
        groups.setdefault(find(v), set()).add(v)
    return [g for g in groups.values() if len(g) > 1]
