"""fold-bn: fold inference batch norm into the conv or linear layers that feed it.

Batch norm over channel axis 1 is `y * s + t` per channel, with
`s = gamma / sqrt(var + eps)` and `t = beta - mean * s`. When `y` comes from a
conv or linear whose weight and bias are parameters, the scale and shift move
into them: `w' = w * s` (along the output-channel axis 0, so grouped and
depthwise convs fold alike) and `b' = b * s + t`. A layer without a bias gets
one. The arithmetic is float64, cast back to each parameter's dtype.

A fold needs the producer's output to be read by the batch norm alone (other
readers would see scaled values) and the batch norm's statistics to be
parameters. Weights with a sparsity mask or an encoding are left alone, so no
compressed form is silently dropped. A weight shared with other nodes is
copied before it is scaled. Batch norms that cannot fold stay and are counted
as `skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import Rule, apply_rules


def _bn_affine(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel float64 (scale, shift) with bn(y) = y * scale + shift; None if not constant."""
    stats = bn.inputs[1:]
    if not all(graph.is_param(v) and graph.param(v).data.ndim == 1 for v in stats):
        return None
    gamma, beta, mean, var = (graph.param(v).data.astype(np.float64) for v in stats)
    scale = gamma / np.sqrt(var + bn.attrs["eps"])
    return scale, beta - mean * scale


def _read_only_by(graph: Graph, value: str, reader: Node) -> bool:
    return value not in graph.outputs and [n.name for n in graph.users(value)] == [reader.name]


def _foldable_layer(graph: Graph, value: str, reader: Node) -> Node | None:
    """The conv/linear producing `value` (channels on axis 1) if only `reader` reads it."""
    layer = graph.producer(value)
    if layer is None or layer.op not in ("conv", "linear") or not _read_only_by(graph, value, reader):
        return None
    if not all(graph.is_param(v) for v in layer.inputs[1:]):
        return None  # e.g. a dequantized weight
    weight = graph.param(layer.inputs[1])
    if weight.mask is not None or weight.encoding is not None:
        return None
    out = graph.value(value).type
    if layer.op == "linear" and (out is None or out.rank != 2):
        return None  # BN1d's axis 1 is linear's feature axis only for [N, F]
    return layer


def _write_param(graph: Graph, node: Node, index: int, data: np.ndarray) -> None:
    """Give `node`'s input `index` new parameter data, copying the parameter if others read it."""
    name = node.inputs[index]
    if _read_only_by(graph, name, node) and node.inputs.count(name) == 1:
        graph.set_param(name, data)
    else:
        new = graph.add_param(name, data, trainable=graph.param(name).trainable)
        graph.set_input(node, index, new)


def _bias_name(weight: str) -> str:
    return weight[: -len("weight")] + "bias" if weight.endswith("weight") else f"{weight}.bias"


def _scale_layer(graph: Graph, layer: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    """layer(x, w, b) => layer(x, w * scale, b * scale + shift), per output channel."""
    w = graph.param(layer.inputs[1])
    w64 = w.data.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.data.ndim - 1))
    _write_param(graph, layer, 1, w64.astype(w.data.dtype))
    if len(layer.inputs) > 2:
        b = graph.param(layer.inputs[2]).data
        _write_param(graph, layer, 2, (b.astype(np.float64) * scale + shift).astype(b.dtype))
    else:
        bias = graph.add_param(_bias_name(layer.inputs[1]), shift.astype(w.data.dtype), trainable=w.trainable)
        graph.set_inputs(layer, [*layer.inputs, bias])


def fold_into_layer(graph: Graph, bn: Node) -> str | None:
    # batch_norm(conv(x, w, b)) => conv(x, w * s, b * s + t); likewise linear on [N, F]
    layer = _foldable_layer(graph, bn.inputs[0], bn)
    affine = _bn_affine(graph, bn)
    if layer is None or affine is None or graph.param(layer.inputs[1]).data.shape[0] != affine[0].size:
        return None
    _scale_layer(graph, layer, *affine)
    return layer.output


def fold_into_concat(graph: Graph, bn: Node) -> str | None:
    # batch_norm(concat(conv_1(..), .., conv_k(..), axis=1)) => concat(conv_1'(..), .., conv_k'(..))
    cat = graph.producer(bn.inputs[0])
    if cat is None or cat.op != "concat" or not _read_only_by(graph, cat.output, bn):
        return None
    out = graph.value(cat.output).type
    if out is None or cat.attrs["axis"] % out.rank != 1 or len(set(cat.inputs)) != len(cat.inputs):
        return None
    layers = [_foldable_layer(graph, v, cat) for v in cat.inputs]
    affine = _bn_affine(graph, bn)
    if affine is None or any(layer is None for layer in layers):
        return None
    bounds = np.cumsum([0] + [graph.param(layer.inputs[1]).data.shape[0] for layer in layers])
    if bounds[-1] != affine[0].size:
        return None
    for layer, lo, hi in zip(layers, bounds[:-1], bounds[1:]):
        _scale_layer(graph, layer, affine[0][lo:hi], affine[1][lo:hi])
    return cat.output


RULES = [
    Rule("batch_norm", fold_into_layer),  # batch_norm(conv|linear(x, w, b)) => conv|linear(x, w', b')
    Rule("batch_norm", fold_into_concat),  # batch_norm(concat(conv_i(..))) => concat(conv_i'(..))
]


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold inference batch norm into the conv/linear layers that feed it.

    Stats: `folded` batch norms removed, `skipped` batch norms left in the graph.
    """

    name: ClassVar[str] = "fold-bn"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        folded = apply_rules(graph, RULES)
        skipped = sum(1 for n in graph.nodes if n.op == "batch_norm")
        return PassResult(graph, folded > 0, {"folded": folded, "skipped": skipped})

    def tolerance(self) -> Tolerance:
        return Tolerance.exact(atol=1e-5, rtol=1e-4)
