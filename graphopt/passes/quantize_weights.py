"""quantize-weights: weight-only int8/int4 quantization with group-wise scales; activations stay float.

    # linear(x, w) => linear(x, dequantize(w_int4, s[out, in/group], 0){axis=1, block_size=group})

Each float weight of a conv, linear or matmul (its parameter operand) becomes
an integer parameter (`bits`=8: int8, 4: int4, stored two per byte) feeding a
`dequantize`. `scales=per-group` (default) blocks the scales along the reduction
axis (ONNX's blocked layout: one scale per `group` consecutive input channels of
each output channel; for a conv, per kernel position), falling back to one scale
per output channel where the reduction axis is no longer than `group`;
`per-channel` gives one scale per output channel, `per-tensor` one in all.
symmetric=true: zero point 0 over the narrow range [-(2^(b-1)-1), 2^(b-1)-1]
(int4: [-7, 7]); symmetric=false: uint4/uint8 with a zero point per scale,
over [min(w, 0), max(w, 0)]. A weight read by several nodes is quantized once.

`requantize=true` also re-quantizes weights that are already dequantized from
a wider integer type per output channel (what `quantize` writes: int8 on axis 0)
to `bits`, from their dequantized values (a second rounding of at most half an
int8 step), and rescales a conv/linear int32 bias to the new s_x * s_w: W4A8
with group-wise 4-bit scales, `quantize,quantize-weights{bits=4 requantize=true}`
(per-channel W4A8 with one rounding is `quantize{weights-bits=4}`).
Otherwise a weight that already feeds a dequantize is left alone, so a second run
changes nothing.

ONNX: DequantizeLinear takes int4 and block_size from opset 21; emit with
`to_onnx(opset=21)` (the emitter refuses lower opsets, naming the node).
Stats: `quantized` weights, `skipped` with `skipped_reasons`, `bits`, `scales`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import dtype_from_numpy, dtype_info, numpy_dtype
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_qdq import dequantized, expand, is_float_value, quantized_weights

TARGETS = ("conv", "linear", "matmul")
_TINY = np.float32(2**-24)


@dataclass(frozen=True)
class _Target:
    param: str
    node: Node
    index: int
    out_axis: int | None
    in_axis: int


@register_pass
@dataclass(frozen=True)
class QuantizeWeights(Pass):
    """Weight-only int8/int4 quantization of conv/linear/matmul weights, per channel or per group along the input."""

    name: ClassVar[str] = "quantize-weights"
    bits: int = 4
    scales: Literal["per-group", "per-channel", "per-tensor"] = "per-group"
    group: int = 128
    symmetric: bool = True
    requantize: bool = False
    ops: tuple[str, ...] = TARGETS
    skip: tuple[str, ...] = ()

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"{self.name}: bits must be 4 or 8, got {self.bits}")
        if self.group < 1:
            raise ValueError(f"{self.name}: group must be at least 1, got {self.group}")
        unknown = [op for op in self.ops if op not in TARGETS]
        if unknown:
            raise ValueError(f"{self.name}: ops {unknown} have no weights to quantize; choose from {TARGETS}")

    @property
    def dtype(self) -> str:
        return ("int" if self.symmetric else "uint") + str(self.bits)

    def tolerance(self) -> Tolerance:
        return Tolerance.bounded(min_sqnr_db=8.0 if self.bits == 4 else 20.0)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        targets, skipped = self.targets(graph)
        for t in targets:
            self.quantize_target(graph, t)
        count = len(targets)
        if self.requantize:
            count += self._requantize_all(graph, skipped)
        graph.cleanup()
        stats = {"quantized": count, "skipped": len(skipped), "skipped_reasons": skipped}
        stats.update(bits=self.bits, scales=self.scales if self.scales != "per-group" else f"per-group of {self.group}")
        return PassResult(graph, count > 0, stats)

    # ---- float weights ----------------------------------------------------------------------

    def targets(self, graph: Graph) -> tuple[list[_Target], dict[str, str]]:
        """(the float weights this pass quantizes, each once; {node: why skipped})."""
        missing = [s for s in self.skip if not graph.has_node(s)]
        if missing:
            from graphopt.errors import PassError

            raise PassError(f"{self.name}: skip names {missing}, which are not nodes of graph '{graph.name}'")
        found, skipped, seen = [], {}, set()
        for node in graph.nodes:
            if node.op not in self.ops:
                continue
            if node.name in self.skip:
                skipped[node.name] = "skip option"
                continue
            roles = _roles(graph, node)
            if not roles:
                producer = graph.producer(node.inputs[1]) if len(node.inputs) > 1 else None
                if producer is not None and producer.op == "dequantize":
                    skipped[node.name] = "weight already quantized"
                elif node.op != "matmul":
                    skipped[node.name] = "weight is not a float parameter"
                continue
            for index, out_axis, in_axis in roles:
                name = node.inputs[index]
                if name not in seen:
                    seen.add(name)
                    found.append(_Target(name, node, index, out_axis, in_axis))
        return found, skipped

    def quantize_target(self, graph: Graph, t: _Target) -> None:
        # w => dequantize(w_int, s, z){axis, block_size}
        w = graph.param(t.param).data.astype(np.float64)
        axis, block = self.layout(w.shape, t)
        q, scale, zero = self.quantize_array(w, axis, block)
        ins = [
            graph.add_param(f"{t.param}.{self.dtype}", q, trainable=False),
            graph.add_param(f"{t.param}.scale", scale, trainable=False),
            graph.add_param(f"{t.param}.zero_point", zero, trainable=False),
        ]
        dq = graph.add_node("dequantize", ins, attrs={"axis": axis, "block_size": block}, name=f"{t.param}.dq")
        for reader in list(graph.users(t.param)):
            graph.set_inputs(reader, [dq.output if v == t.param else v for v in reader.inputs])

    def layout(self, shape: tuple[int, ...], t: _Target) -> tuple[int | None, int | None]:
        """(dequantize axis, block_size): blocked along the reduction axis, per output channel, or per tensor."""
        if self.scales == "per-tensor":
            return None, None
        if self.scales == "per-group" and shape[t.in_axis] > self.group:
            return t.in_axis, self.group
        return t.out_axis, None

    def quantize_array(self, w: np.ndarray, axis: int | None, block: int | None):
        """(integers of self.dtype, float32 scales, zero points) for `w` laid out as `axis`/`block`."""
        info = dtype_info(self.dtype)
        lo_w, hi_w = _reduce(w, axis, block, np.min), _reduce(w, axis, block, np.max)
        if self.symmetric:
            qmax = 2 ** (info.bits - 1) - 1
            qmin = -qmax
            scale = np.maximum(np.maximum(-lo_w, hi_w) / qmax, _TINY).astype(np.float32)
            zero = np.zeros(scale.shape, np.int64)
        else:
            qmin, qmax = 0, 2**info.bits - 1
            lo_w, hi_w = np.minimum(lo_w, 0.0), np.maximum(hi_w, 0.0)
            scale = np.maximum((hi_w - lo_w) / qmax, _TINY).astype(np.float32)
            zero = np.clip(np.round(-lo_w / scale), qmin, qmax).astype(np.int64)
        s = expand(scale.astype(np.float64), w.shape, axis, block)
        z = expand(zero.astype(np.float64), w.shape, axis, block)
        q = np.clip(np.round(w / s) + z, qmin, qmax)
        dtype = numpy_dtype(self.dtype)
        return q.astype(dtype), scale, zero.astype(dtype)

    # ---- already-quantized weights (requantize=true) ----------------------------------------

    def _requantize_all(self, graph: Graph, skipped: dict[str, str]) -> int:
        count = 0
        for qw in quantized_weights(graph):
            if qw.bits <= self.bits or qw.node in self.skip:
                continue
            if qw.axis not in (0, None) or qw.block_size or graph.param(qw.zero_point).data.any():
                skipped[qw.node] = f"weight is {qw.dtype} with a layout requantize does not take (axis/block/zero)"
                continue
            node = graph.node(qw.node)
            if len(graph.users(graph.node(qw.dequantize).output)) != 1:
                skipped[qw.node] = "quantized weight shared with other nodes"
                continue
            w = dequantized(graph, qw).astype(np.float64)
            t = _Target(qw.q, node, 1, 0, 1)
            axis, block = self.layout(w.shape, t)
            q, scale, zero = self.quantize_array(w, axis, block)
            old_scale = graph.param(qw.scale).data
            ins = [
                graph.add_param(f"{qw.q}.{self.dtype}", q, trainable=False),
                graph.add_param(f"{qw.scale}.{self.dtype}", scale, trainable=False),
                graph.add_param(f"{qw.zero_point}.{self.dtype}", zero, trainable=False),
            ]
            dq = graph.node(qw.dequantize)
            graph.rewrite_node(dq, "dequantize", ins, {"axis": axis, "block_size": block})
            if block is None:
                _rescale_bias(graph, node, old_scale, scale)
            skipped.pop(qw.node, None)
            count += 1
        return count


def _roles(graph: Graph, node: Node) -> list[tuple[int, int | None, int]]:
    """(input index, output axis, reduction axis) of each float weight parameter `node` reads."""
    if node.op in ("conv", "linear"):
        w = node.inputs[1]
        if graph.is_param(w) and is_float_value(graph, w) and graph.param(w).data.ndim >= 2:
            return [(1, 0, 1)]
        return []
    roles = []
    for index in (0, 1):
        v = node.inputs[index]
        if graph.is_param(v) and is_float_value(graph, v) and graph.param(v).data.ndim >= 2:
            rank = graph.param(v).data.ndim
            roles.append((index, rank - 1, rank - 2) if index == 1 else (index, rank - 2, rank - 1))
    return roles


def _reduce(w: np.ndarray, axis: int | None, block: int | None, fn) -> np.ndarray:
    """fn over each scale's entries: the whole tensor, each slice along `axis`, or blocks along `axis`."""
    if axis is None:
        return np.asarray(fn(w))
    if not block:
        others = tuple(i for i in range(w.ndim) if i != axis)
        return fn(w, axis=others)
    n = w.shape[axis]
    blocks = -(-n // block)
    pad = [(0, 0)] * w.ndim
    pad[axis] = (0, blocks * block - n)
    padded = np.pad(w, pad, mode="edge")  # repeat the last entry: the block's range is unchanged
    shape = list(w.shape)
    shape[axis : axis + 1] = [blocks, block]
    return fn(padded.reshape(shape), axis=axis + 1)


def _rescale_bias(graph: Graph, node: Node, old_scale: np.ndarray, new_scale: np.ndarray) -> None:
    # dequantize(b_int32, s_x * s_w_old) => dequantize(b_int32', s_x * s_w_new): same float bias, new grid
    if len(node.inputs) < 3:
        return
    dq = graph.producer(node.inputs[2])
    if dq is None or dq.op != "dequantize" or not all(graph.is_param(v) for v in dq.inputs):
        return
    q, s, z = dq.inputs
    if dtype_from_numpy(graph.param(q).data.dtype) != "int32" or len(graph.users(dq.output)) != 1:
        return
    bias = (graph.param(q).data.astype(np.float64) - graph.param(z).data) * graph.param(s).data
    ratio = np.asarray(new_scale, np.float64) / np.asarray(old_scale, np.float64)
    scale = (graph.param(s).data.astype(np.float64) * ratio).astype(np.float32)
    ints = np.round(bias / scale)
    if np.all(np.abs(ints) < 2**31 - 1):
        graph.set_param(q, ints.astype(np.int32))
        graph.set_param(s, scale)
