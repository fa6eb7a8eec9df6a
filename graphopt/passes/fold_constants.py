"""fold-constants: evaluate nodes whose inputs are all parameters; drop x*1, x+(-0), x-0, x/1.

A canonical node reading only parameters is run once through its op's torch
reference and replaced by new parameter(s) named `<output>_folded`. A folded
parameter is trainable when it is floating point and at least one input was
trainable, so folding never freezes a trained weight (`reshape(@w)` stays
trainable; arithmetic on frozen constants stays frozen).

Not folded: opaque nodes, `quantize`/`dequantize` and float-widening `cast`
(they are how compressed weights are stored: folding would undo the
compression), nodes defining graph outputs (outputs stay node-defined), and
nodes whose outputs hold more than `max_elements` elements in all (reported
as `too_large`).

Identity arithmetic is removed only when it is exact and the constant's
broadcast leaves x's shape and dtype as they were (the node's output type
equals x's type); the constant must hold the neutral element everywhere.
IEEE semantics are kept (NaN, inf, signed zero): on floats `x + 0.0` turns -0.0
into +0.0 and `x - (-0.0)` does too, so only `x + (-0.0)` and `x - (+0.0)` are
dropped; `x * 0` is never 0 (inf and NaN give NaN, -x gives -0.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch

from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import get_op
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.pattern import Match, Pat, PatternRule, holds
from graphopt.passes.registry import register_pass
from graphopt.passes.rewrite import Rule, apply_rules, replaceable

_STORAGE_OPS = ("quantize", "dequantize")


def _is_storage_cast(graph: Graph, node: Node) -> bool:
    """cast(@w_f16 -> float32): a weight kept narrow on purpose."""
    if node.op != "cast":
        return False
    src, dst = np.dtype(graph.param(node.inputs[0]).data.dtype), node.attrs["dtype"]
    return src.kind == "f" and dst in ("float32", "float64") and src.itemsize < np.dtype(dst).itemsize


def _foldable(graph: Graph, node: Node) -> bool:
    """`node` reads only parameters and may be evaluated (size aside)."""
    return (
        not node.is_opaque
        and node.op not in _STORAGE_OPS
        and bool(node.inputs)
        and all(graph.is_param(v) for v in node.inputs)
        and not any(o in graph.outputs for o in node.outputs)
        and not _is_storage_cast(graph, node)
    )


def _out_elements(graph: Graph, node: Node) -> int | None:
    types = [graph.value(o).type for o in node.outputs]
    if any(t is None or not t.is_static for t in types):
        return None
    return sum(t.numel for t in types)


def fold_node(graph: Graph, node: Node, max_elements: int) -> tuple[str, ...] | None:
    # op(@a, @b, ..) => @op_folded
    if not _foldable(graph, node):
        return None
    size = _out_elements(graph, node)
    if size is None or size > max_elements:
        return None
    params = [graph.param(v) for v in node.inputs]
    with torch.no_grad():
        out = get_op(node.op).impl(*[torch.from_numpy(np.array(p.data)) for p in params], **node.attrs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    trainable = any(p.trainable for p in params)
    names = []
    for o, t in zip(node.outputs, outs):
        data = t.detach().contiguous().numpy().copy()
        names.append(
            graph.add_param(f"{o}_folded", data, trainable=trainable and np.issubdtype(data.dtype, np.floating))
        )
    return tuple(names)


def keep_x(graph: Graph, m: Match) -> str | None:
    """x, if it can stand for the node's output: same type (broadcast-safe) and output-safe."""
    x, out = m["x"], m.root.output
    t = graph.value(x).type
    if t is None or t != graph.value(out).type or not replaceable(graph, out, x):
        return None
    return x


def _zero_of_sign(graph: Graph, name: str, negative: bool) -> bool:
    """Parameter `name` is zero everywhere, and (for a float result) of the given sign."""
    if not holds(graph, name, 0.0):
        return False
    data = graph.param(name).data
    if not np.issubdtype(data.dtype, np.floating):
        return not negative  # an integer 0 is +0.0 once promoted
    return bool(np.all(np.signbit(data) == negative))


def keep_x_exact_zero(graph: Graph, m: Match, negative: bool) -> str | None:
    """keep_x where the zero is exact on x's dtype: any zero for integers, else that signed zero."""
    t = graph.value(m["x"]).type
    if (
        t is not None
        and np.issubdtype(np.dtype(t.dtype), np.floating)
        and not _zero_of_sign(graph, m["zero"], negative)
    ):
        return None
    return keep_x(graph, m)


X = Pat.any("x")
ZERO = Pat.const(0, name="zero")
SIMPLIFY_RULES = [  # add and mul match either input order
    PatternRule(Pat("mul", (X, Pat.const(1))), keep_x),  # x * 1 => x ; 1 * x => x
    # x + (-0.0) => x ; -0.0 + x => x  (x + 0.0 is not: -0.0 + 0.0 = +0.0; ints: any 0)
    PatternRule(Pat("add", (X, ZERO)), partial(keep_x_exact_zero, negative=True)),
    # x - 0.0 => x  (x - (-0.0) is not: -0.0 - -0.0 = +0.0; ints: any 0)
    PatternRule(Pat("sub", (X, ZERO)), partial(keep_x_exact_zero, negative=False)),
    PatternRule(Pat("div", (X, Pat.const(1))), keep_x),  # x / 1 => x
]


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate parameter-only nodes into parameters and remove neutral arithmetic.

    Stats: `folded` nodes evaluated, `simplified` neutral ops removed, `too_large`
    parameter-only nodes left because their outputs exceed `max_elements`.
    """

    name: ClassVar[str] = "fold-constants"
    max_elements: int = 1 << 24

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        fold = [Rule(None, partial(fold_node, max_elements=self.max_elements))]  # op(@a, ..) => @folded
        folded = simplified = 0
        while True:  # a simplification can leave a node reading only parameters
            folded += apply_rules(graph, fold)
            step = apply_rules(graph, SIMPLIFY_RULES)
            simplified += step
            if not step:
                break
        too_large = sum(
            1 for n in graph.nodes if _foldable(graph, n) and (_out_elements(graph, n) or 0) > self.max_elements
        )
        changed = folded + simplified > 0
        return PassResult(graph, changed, {"folded": folded, "simplified": simplified, "too_large": too_large})
