"""equalize-cross-layer: cross-layer equalization (Nagel et al. 2019, data-free quantization), exact in float.

    # conv_2(relu(conv_1(x, w1, b1)), w2) => conv_2(relu(conv_1(x, w1 / s, b1 / s)), w2 * s)   (s per channel)

For two layers joined channel for channel by positive-homogeneous ops
(f(x / s) = f(x) / s for s > 0), output channel i of the first is divided by s_i
and input channel i of the second multiplied by s_i, which leaves the output
unchanged. With r1_i the range max|w1[i]| of the first layer's output channel
and r2_i that of the second layer's input channel, the paper's choice
s_i = sqrt(r1_i * r2_i) / r2_i makes both ranges sqrt(r1_i * r2_i): per-tensor
quantization then wastes no levels on a channel whose range is far below the
others (depthwise convs are the classic case). A layer in a chain belongs to two
pairs, so the scales are recomputed and applied until every s_i is within
`tolerance` of 1 (or `iterations` rounds).

Pairs: a conv (any groups, depthwise included) or linear with a float weight
parameter, then any number of relu, clip{min=0, max=None}, max/avg pooling,
identity/dropout, and a flatten over a [N, C, 1, ...] tensor, then a conv or
linear with a float weight parameter; each value on the way is read only by the
next op. A clip with a max (relu6) is not positive-homogeneous: `clip=skip`
(default) leaves such pairs alone, `clip=exact` rewrites it to
relu then minimum with a per-channel bound max/s_i (exact, one extra node),
`clip=relu` replaces it by relu as the paper does for MobileNetV2 (not exact:
the verifier bound is loosened). Run it after fold-bn: a batch_norm between the
layers is not positive-homogeneous in general and stops a pair. The paper's
high-bias absorption is not done here.

Stats: `pairs` equalized, `iterations`, `skipped` pairs with `skipped_reasons`;
with no pair, `reason` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_qdq import is_float_value

LAYERS = ("conv", "linear")
CHANNELWISE = ("relu", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "identity", "dropout")


@dataclass
class _Pair:
    first: Node
    second: Node
    path: list[Node]  # the ops between them
    clips: list[Node]  # clips with a max on the path (rewritten under clip=exact/relu)


@register_pass
@dataclass(frozen=True)
class EqualizeCrossLayer(Pass):
    """Rescale consecutive conv/linear pairs through ReLU-like ops so their per-channel weight ranges match."""

    name: ClassVar[str] = "equalize-cross-layer"
    clip: Literal["skip", "exact", "relu"] = "skip"
    iterations: int = 100
    tolerance_scale: float = 1e-4

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be >= 1, got {self.iterations}")
        if not self.tolerance_scale > 0:
            raise ValueError(f"{self.name}: tolerance-scale must be positive, got {self.tolerance_scale}")

    def tolerance(self) -> Tolerance:
        if self.clip == "relu":
            return Tolerance.bounded(min_sqnr_db=10.0)
        return Tolerance.exact(atol=1e-4, rtol=1e-4)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs, skipped = self.find_pairs(graph)
        stats: dict = {"pairs": len(pairs), "iterations": 0, "skipped": len(skipped), "skipped_reasons": skipped}
        if not pairs:
            stats["reason"] = _no_pair_reason(graph, skipped)
            return PassResult(graph, False, stats)
        weights, biases = self._load(graph, pairs)
        total = {p.first.name: np.ones(weights[p.first.name].shape[0]) for p in pairs}
        for stats["iterations"] in range(1, self.iterations + 1):
            largest = 0.0
            for p in pairs:
                s = _equalizing_scales(weights[p.first.name], weights[p.second.name], p.second)
                _scale_out(weights, biases, p.first.name, 1.0 / s)
                _scale_in(weights, p.second, s)
                total[p.first.name] *= s
                largest = max(largest, float(np.max(np.abs(np.log(s)))))
            if largest < self.tolerance_scale:
                break
        moved = any(np.max(np.abs(np.log(t))) >= self.tolerance_scale for t in total.values())
        if not moved:
            stats["pairs"] = 0
            stats["reason"] = "already equalized: every channel scale is within tolerance of 1"
            return PassResult(graph, False, stats)
        self._store(graph, pairs, weights, biases, total)
        return PassResult(graph, True, stats)

    # ---- where ------------------------------------------------------------------------

    def find_pairs(self, graph: Graph) -> tuple[list[_Pair], dict[str, str]]:
        """The equalizable pairs and, per first layer that was not paired, why (only where a layer follows)."""
        pairs, skipped = [], {}
        for node in graph.nodes:
            if node.op not in LAYERS:
                continue
            found = self._pair_from(graph, node)
            if isinstance(found, _Pair):
                pairs.append(found)
            elif found:
                skipped[node.name] = found
        # a layer shared by two pairs on the same side (e.g. read by two layers) cannot be scaled for both
        firsts = [p.first.name for p in pairs]
        seconds = [p.second.name for p in pairs]
        return [p for p in pairs if firsts.count(p.first.name) == 1 and seconds.count(p.second.name) == 1], skipped

    def _pair_from(self, graph: Graph, first: Node) -> _Pair | str | None:
        """The pair starting at `first`, or why not (None when no layer follows at all)."""
        why = _own_weights(graph, first)
        value, path, clips = first.output, [], []
        while True:
            if value in graph.outputs:
                return None
            readers = graph.users(value)
            if len(readers) != 1:
                return f"output '{value}' is read by {len(readers)} nodes" if len(readers) > 1 else None
            nxt = readers[0]
            if nxt.op in LAYERS and nxt.inputs[0] == value and value not in nxt.inputs[1:]:
                break
            reason = self._passes_through(graph, nxt)
            if reason is not None:
                return reason
            if nxt.op == "clip" and nxt.attrs["max"] is not None:
                clips.append(nxt)
            path.append(nxt)
            value = nxt.output
        second = nxt
        why = why or _own_weights(graph, second)
        if why:
            return why
        channels = graph.param(first.inputs[1]).data.shape[0]
        if _in_channels(graph, second) != channels:
            return f"'{second.name}' does not read the {channels} channels of '{first.name}' one to one"
        return _Pair(first, second, path, clips)

    def _passes_through(self, graph: Graph, node: Node) -> str | None:
        """None if `node` keeps channels and commutes with a positive per-channel scale; else why not."""
        if node.op in CHANNELWISE and len(node.inputs) == 1:
            return None
        if node.op == "clip":
            lo, hi = node.attrs["min"], node.attrs["max"]
            if lo is None or lo != 0:
                return f"clip '{node.name}' has min {lo}, not 0"
            if hi is not None and self.clip == "skip":
                return f"clip '{node.name}' has a max ({hi}); use clip=exact or clip=relu to equalize through it"
            return None
        if node.op == "flatten":
            t = graph.value(node.inputs[0]).type
            if node.attrs["start_dim"] == 1 and t is not None and all(d == 1 for d in t.shape[2:]):
                return None
            return f"flatten '{node.name}' mixes channels with spatial positions"
        if node.op == "batch_norm":
            return f"batch_norm '{node.name}' sits between the layers (run fold-bn first)"
        return f"{node.op} '{node.name}' is not positive-homogeneous per channel"

    # ---- edits --------------------------------------------------------------------------

    def _load(self, graph: Graph, pairs: list[_Pair]):
        weights, biases = {}, {}
        for p in pairs:
            for layer in (p.first, p.second):
                weights[layer.name] = graph.param(layer.inputs[1]).data.astype(np.float64)
                if len(layer.inputs) > 2:
                    biases[layer.name] = graph.param(layer.inputs[2]).data.astype(np.float64)
        return weights, biases

    def _store(self, graph: Graph, pairs: list[_Pair], weights, biases, total) -> None:
        for p in pairs:
            for layer in (p.first, p.second):
                w = layer.inputs[1]
                graph.set_param(w, weights[layer.name].astype(graph.param(w).data.dtype))
                if layer.name in biases:
                    b = layer.inputs[2]
                    graph.set_param(b, biases[layer.name].astype(graph.param(b).data.dtype))
            for clip in p.clips:
                self._rescale_clip(graph, clip, total[p.first.name])

    def _rescale_clip(self, graph: Graph, clip: Node, s: np.ndarray) -> None:
        # clip(x / s, 0, m) => minimum(relu(x / s), m / s)      (clip=exact)
        # clip(x / s, 0, m) => relu(x / s)                      (clip=relu)
        if self.clip == "relu":
            graph.rewrite_node(clip, "relu", [clip.inputs[0]], {})
            return
        rank = graph.value(clip.inputs[0]).type.rank
        bound = (float(clip.attrs["max"]) / s).reshape((-1,) + (1,) * (rank - 2)).astype(np.float32)
        name = graph.add_param(f"{clip.name}.max", bound, trainable=False)
        graph.rewrite_node(clip, "relu", [clip.inputs[0]], {})
        graph.insert_on_edge(clip.output, "minimum", extra_inputs=[name], name=f"{clip.name}.min")


def _own_weights(graph: Graph, layer: Node) -> str | None:
    """None if `layer`'s weight (and bias) are float parameters only it reads; else why not."""
    for v in layer.inputs[1:]:
        if not graph.is_param(v) or not is_float_value(graph, v):
            return f"'{layer.name}' has a weight or bias that is not a float parameter"
        if len(graph.users(v)) != 1 or layer.inputs.count(v) != 1:
            return f"parameter '{v}' of '{layer.name}' is shared with other nodes"
        p = graph.param(v)
        if p.mask is not None or p.encoding is not None:
            return f"parameter '{v}' of '{layer.name}' has a mask or an encoding"
    if graph.param(layer.inputs[1]).data.ndim < 2:
        return f"'{layer.name}' has a weight of rank < 2"
    return None


def _in_channels(graph: Graph, layer: Node) -> int:
    w = graph.param(layer.inputs[1]).data
    return w.shape[1] * (layer.attrs["groups"] if layer.op == "conv" else 1)


def _in_channel_view(w: np.ndarray, layer: Node) -> np.ndarray:
    """The second layer's weight as [input channel, everything it multiplies], honouring conv groups."""
    groups = layer.attrs["groups"] if layer.op == "conv" else 1
    out, cin_g = w.shape[0], w.shape[1]
    per_group = w.reshape(groups, out // groups, cin_g, -1)  # [g, out/g, in/g, k]
    return per_group.transpose(0, 2, 1, 3).reshape(groups * cin_g, -1)


def _equalizing_scales(w1: np.ndarray, w2: np.ndarray, second: Node) -> np.ndarray:
    """s_i = sqrt(r1_i * r2_i) / r2_i (1 where a channel is all zero on either side)."""
    r1 = np.max(np.abs(w1.reshape(w1.shape[0], -1)), axis=1)
    r2 = np.max(np.abs(_in_channel_view(w2, second)), axis=1)
    ok = (r1 > 0) & (r2 > 0)
    return np.where(ok, np.sqrt(np.where(ok, r1 * r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)


def _scale_out(weights, biases, name: str, factor: np.ndarray) -> None:
    w = weights[name]
    weights[name] = w * factor.reshape((-1,) + (1,) * (w.ndim - 1))
    if name in biases:
        biases[name] = biases[name] * factor


def _scale_in(weights, second: Node, s: np.ndarray) -> None:
    w = weights[second.name]
    groups = second.attrs["groups"] if second.op == "conv" else 1
    out, cin_g = w.shape[0], w.shape[1]
    factor = s.reshape(groups, 1, cin_g)  # input channel g * cin_g + j scales column j of group g's rows
    shaped = w.reshape(groups, out // groups, cin_g, -1) * factor[..., None]
    weights[second.name] = shaped.reshape(w.shape)


def _no_pair_reason(graph: Graph, skipped: dict[str, str]) -> str:
    layers = sum(1 for n in graph.nodes if n.op in LAYERS)
    if layers < 2:
        return f"no equalizable pair: graph '{graph.name}' has {layers} conv/linear layer(s)"
    if skipped:
        first = next(iter(skipped.items()))
        return f"no equalizable pair: e.g. after '{first[0]}': {first[1]}"
    return "no equalizable pair: no conv/linear feeds another through channel-wise positive-homogeneous ops"
