"""binarize: binary weights, w ~ sign(w) * alpha with alpha = mean |w| per output channel (XNOR-Net).

    before: @features.3.weight: f32[32,16,3,3]
    after:  @features.3.weight: f32[32,16,3,3]  (encoding=binary(1-bit signs, 32 scales on axis 0))

For a fixed sign pattern B = sign(w), alpha = mean |w| is the scale minimising
||w - alpha B||^2 (Rastegari et al., XNOR-Net, 2016), per output channel
(`scale=per-channel`, along the weight's output axis; targets without one fall
back to one scale) or per tensor. Zero goes to +alpha. The result is a
`BinarySign` encoding: one bit per weight plus the scales, ~32x smaller than
float32.

The first and last conv/linear layers (first and last in topological order)
stay in float unless `keep_first_last=false`: they see raw pixels and produce
the logits, and binarizing them costs the most accuracy for the least storage
(the usual practice since XNOR-Net). Masked parameters are skipped (a binary
weight has no zero) and so are parameters already encoded, so a second run
changes nothing. Targets, `include` and `ignore` as in `weight_targets`.
Binary networks are trained binary; this pass is the storage form and the
starting point, and its tolerance is left unchecked.

Stats: `layers` binarized, `bytes` of those parameters before -> after,
`kept_float` (first/last) and `skipped` {parameter: reason}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from graphopt.ir.encodings import BinarySign
from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_targets import PRODUCTS, check_options, weight_targets


@register_pass
@dataclass(frozen=True)
class Binarize(Pass):
    """Replace weights by sign(w) * mean|w| (per output channel or per tensor), keeping the first/last layer float."""

    name: ClassVar[str] = "binarize"
    scale: Literal["per-channel", "per-tensor"] = "per-channel"
    keep_first_last: bool = True
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_options(self.name, self.include)

    def tolerance(self) -> Tolerance:
        # One bit per weight: outputs of an untrained-for-binary model are not preserved
        # (often near 0 dB); binary networks are trained binary. Output shapes are checked.
        return Tolerance.bounded()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        ends = first_and_last(graph) if self.keep_first_last else set()
        skipped: dict[str, str] = {}
        kept_float = []
        before = after = done = 0
        for t in weight_targets(graph, self.name, self.include, self.ignore):
            p = graph.param(t.param)
            if t.node in ends:
                kept_float.append(t.param)
            elif p.encoding is not None:
                skipped[t.param] = "already encoded"
            elif p.mask is not None and not p.mask.all():
                skipped[t.param] = "masked (binary weights have no zero)"
            else:
                enc = binary_encoding(p.data, None if self.scale == "per-tensor" else t.out_axis)
                before, after, done = before + p.data.nbytes, after + enc.nbytes, done + 1
                graph.set_encoding(t.param, enc)
        stats: dict[str, Any] = {"layers": done, "bytes": f"{before}->{after}", "kept_float": kept_float}
        if skipped:
            stats["skipped"] = skipped
        return PassResult(graph, done > 0, stats)


def binary_encoding(w: np.ndarray, axis: int | None) -> BinarySign:
    """sign(w) (zero counts as +) and alpha = mean |w| over all axes but `axis` (None: over everything)."""
    magnitude = np.abs(w.astype(np.float64))
    if axis is None:
        scales = magnitude.mean(keepdims=True).reshape(1)
    else:
        scales = magnitude.mean(axis=tuple(i for i in range(w.ndim) if i != axis))
    return BinarySign(w >= 0, scales.astype(w.dtype), axis)


def first_and_last(graph: Graph) -> set[str]:
    """Names of the first and the last conv/linear node in topological order."""
    layers = [n.name for n in graph.nodes if n.op in PRODUCTS]
    return set(layers[:1] + layers[-1:])
