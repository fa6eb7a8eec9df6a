"""How each canonical op couples the axes of its ports, for the dependency analysis.

`node_rule(graph, node)` returns a `NodeRule`: axis classes (`dep_flow`),
axes a pruning unit must not cross (`refuse`: a conv's spatial axes, the
axis a softmax normalises over), axes whose coordinates no unit may remove
(`frozen`: a slice or select reads fixed positions), or `reshape` (handled by
segments). Ops without a rule refuse every axis, naming the op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphopt.analysis.dep_flow import AxisClass, Member, Port
from graphopt.ir.ops import OPAQUE, OPS

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

Shape = tuple[int, ...]


@dataclass
class NodeRule:
    classes: list[AxisClass] = field(default_factory=list)
    refuse: dict[tuple[Port, int], str] = field(default_factory=dict)
    frozen: list[tuple[Port, int]] = field(default_factory=list)
    reshape: bool = False
    refuse_all: str | None = None


def IN(i: int) -> Port:  # noqa: N802 - reads like a port label
    return ("in", i)


OUT0: Port = ("out", 0)


def _m(port: Port, axis: int | None, **kw) -> Member:
    return Member(port, axis, **kw)


def _elementwise(ins: list[Shape], outs: list[Shape], attrs) -> NodeRule:
    out = outs[0]
    rank = len(out)
    classes = []
    for j in range(rank):
        cls = [_m(OUT0, j)]
        for i, s in enumerate(ins):
            a = j - (rank - len(s))
            if a >= 0 and s[a] == out[j]:
                cls.append(_m(IN(i), a))
        classes.append(tuple(cls))
    return NodeRule(classes)


def _quant(ins, outs, attrs) -> NodeRule:
    rule = _elementwise(ins[:1], outs, attrs)
    axis = attrs.get("axis")
    if axis is None:
        return rule
    axis %= len(outs[0])
    if attrs.get("block_size"):
        rule.refuse[(OUT0, axis)] = rule.refuse[(IN(0), axis)] = "blocked quantization scales along it"
        return rule
    rule.classes[axis] = rule.classes[axis] + tuple(_m(IN(i), 0) for i in (1, 2) if i < len(ins))
    return rule


def _conv(ins, outs, attrs, uniform: bool = False) -> NodeRule:
    """groups == 1: out channels with weight rows, in channels with weight columns.

    Grouped, by default: whole groups go together and the group count shrinks
    (depthwise: channel by channel). `uniform`: every group keeps the same
    channel indices and the group count stays (what a channel shuffle needs).
    """
    x, w = ins[0], ins[1]
    groups = attrs["groups"]
    rule = NodeRule([(_m(IN(0), 0), _m(OUT0, 0))])
    bias = [_m(IN(2), 0)] if len(ins) > 2 else []
    cin, cout = x[1] // groups, w[0] // groups
    if groups == 1:
        rule.classes.append((_m(OUT0, 1), _m(IN(1), 0), *bias))
        rule.classes.append((_m(IN(0), 1), _m(IN(1), 1)))
    elif uniform and cin > 1:
        rule.classes.append(tuple(_m(m.port, m.axis, modulo=cout) for m in (_m(OUT0, 1), _m(IN(1), 0), *bias)))
        rule.classes.append((_m(IN(0), 1, modulo=cin), _m(IN(1), 1)))
    else:
        blocked = [_m(IN(0), 1, block=cin), _m(OUT0, 1, block=cout), _m(IN(1), 0, block=cout)]
        if bias:
            blocked.append(_m(IN(2), 0, block=cout))
        rule.classes.append(tuple(blocked))
        rule.refuse[(IN(1), 1)] = "input channels inside a conv group"
    for a in range(2, len(x)):
        rule.refuse[(IN(0), a)] = rule.refuse[(OUT0, a)] = rule.refuse[(IN(1), a)] = "a conv's spatial axis"
    return rule


def _conv_transpose(ins, outs, attrs) -> NodeRule:
    """Weight [in, out/groups, *k]: in channels with weight rows, out channels with weight columns.

    Grouped: whole groups go together (in channels, weight rows and out channels in blocks).
    """
    x, w = ins[0], ins[1]
    groups = attrs["groups"]
    rule = NodeRule([(_m(IN(0), 0), _m(OUT0, 0))])
    bias = [_m(IN(2), 0)] if len(ins) > 2 else []
    if groups == 1:
        rule.classes.append((_m(OUT0, 1), _m(IN(1), 1), *bias))
        rule.classes.append((_m(IN(0), 1), _m(IN(1), 0)))
    else:
        cin, cout = x[1] // groups, w[1]
        blocked = [_m(IN(0), 1, block=cin), _m(IN(1), 0, block=cin), _m(OUT0, 1, block=cout)]
        rule.classes.append(tuple(blocked + [_m(b.port, b.axis, block=cout) for b in bias]))
        rule.refuse[(IN(1), 1)] = "output channels inside a transposed conv group"
    for a in range(2, len(x)):
        rule.refuse[(IN(0), a)] = rule.refuse[(OUT0, a)] = rule.refuse[(IN(1), a)] = "a conv's spatial axis"
    return rule


def _pixel_shuffle(ins, outs, attrs) -> NodeRule:
    """Channel c of the output is input channels [c*r*r, (c+1)*r*r) (pixel_unshuffle: the other way)."""
    r = attrs.get("upscale_factor") or attrs["downscale_factor"]
    wide, narrow = (IN(0), OUT0) if "upscale_factor" in attrs else (OUT0, IN(0))
    rule = NodeRule([(_m(IN(0), 0), _m(OUT0, 0)), (_m(wide, 1, block=r * r), _m(narrow, 1))])
    for a in range(2, len(ins[0])):
        rule.refuse[(IN(0), a)] = rule.refuse[(OUT0, a)] = "a pixel shuffle's spatial axis"
    return rule


def _linear(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    classes = [(_m(IN(0), a), _m(OUT0, a)) for a in range(r - 1)]
    classes.append((_m(IN(0), r - 1), _m(IN(1), 1)))
    classes.append((_m(OUT0, r - 1), _m(IN(1), 0), *([_m(IN(2), 0)] if len(ins) > 2 else [])))
    return NodeRule(classes)


def _matmul(ins, outs, attrs) -> NodeRule:
    (a, b), out = ins, outs[0]
    ra, rb, ro = len(a), len(b), len(out)
    if ra < 2 or rb < 2:
        rule = NodeRule()
        rule.refuse_all = "a matmul with a 1-d operand"
        return rule
    classes = [
        (_m(IN(0), ra - 2), _m(OUT0, ro - 2)),
        (_m(IN(1), rb - 1), _m(OUT0, ro - 1)),
        (_m(IN(0), ra - 1), _m(IN(1), rb - 2)),
    ]
    for j in range(ro - 2):
        cls = [_m(OUT0, j)]
        for i, s in enumerate((a, b)):
            k = j - (ro - len(s))
            if k >= 0 and s[k] == out[j]:
                cls.append(_m(IN(i), k))
        classes.append(tuple(cls))
    return NodeRule(classes)


def _batch_norm(ins, outs, attrs) -> NodeRule:
    rule = _elementwise(ins[:1], outs, attrs)
    rule.classes[1] = rule.classes[1] + tuple(_m(IN(i), 0) for i in range(1, len(ins)))
    return rule


def _layer_norm(ins, outs, attrs) -> NodeRule:
    rule = _elementwise(ins[:1], outs, attrs)
    r, k = len(ins[0]), len(attrs["normalized_shape"])
    for i in range(k):
        rule.classes[r - k + i] = rule.classes[r - k + i] + tuple(_m(IN(p), i) for p in range(1, len(ins)))
    return rule


def _softmax(ins, outs, attrs) -> NodeRule:
    rule = _elementwise(ins, outs, attrs)
    axis = attrs["axis"] % len(ins[0])
    rule.refuse[(IN(0), axis)] = rule.refuse[(OUT0, axis)] = "the axis a softmax normalizes over"
    return rule


def _pool(ins, outs, attrs) -> NodeRule:
    rule = NodeRule([(_m(IN(0), a), _m(OUT0, a)) for a in range(min(2, len(ins[0])))])
    for a in range(2, len(ins[0])):
        rule.refuse[(IN(0), a)] = rule.refuse[(OUT0, a)] = "a pooling window's spatial axis"
    return rule


def _reduce(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    dims = {d % r for d in attrs["dims"]}
    kept = [a for a in range(r) if a not in dims or attrs["keepdim"]]
    return NodeRule([(_m(IN(0), a), _m(OUT0, j)) for j, a in enumerate(kept) if a not in dims])


def _concat(ins, outs, attrs) -> NodeRule:
    r = len(outs[0])
    axis = attrs["axis"] % r
    classes = [tuple([_m(OUT0, a)] + [_m(IN(i), a) for i in range(len(ins))]) for a in range(r) if a != axis]
    offsets, off = [], 0
    for s in ins:
        offsets.append(off)
        off += s[axis]
    classes.append(tuple([_m(OUT0, axis)] + [_m(IN(i), axis, offset=o) for i, o in enumerate(offsets)]))
    return NodeRule(classes)


def _split(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    axis = attrs["axis"] % r
    classes = [tuple([_m(IN(0), a)] + [_m(("out", k), a) for k in range(len(outs))]) for a in range(r) if a != axis]
    offsets, off = [], 0
    for s in outs:
        offsets.append(off)
        off += s[axis]
    classes.append(tuple([_m(IN(0), axis)] + [_m(("out", k), axis, offset=o) for k, o in enumerate(offsets)]))
    return NodeRule(classes)


def _renumber(pairs: list[tuple[int, int]]) -> NodeRule:
    return NodeRule([(_m(IN(0), a), _m(OUT0, b)) for a, b in pairs])


def _permute(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    return _renumber([(p % r, j) for j, p in enumerate(attrs["perm"])])


def _squeeze(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    gone = {a % r for a in attrs["axes"]}
    return _renumber(list(zip([a for a in range(r) if a not in gone], range(len(outs[0])))))


def _unsqueeze(ins, outs, attrs) -> NodeRule:
    r = len(outs[0])
    new = {a % r for a in attrs["axes"]}
    return _renumber(list(zip(range(len(ins[0])), [a for a in range(r) if a not in new])))


def _expand(ins, outs, attrs) -> NodeRule:
    return _elementwise(ins, outs, attrs)


def _slice(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    axis = attrs["axis"] % r
    start, _, step = slice(attrs["start"], attrs["end"], attrs["step"]).indices(ins[0][axis])
    rule = _renumber([(a, a) for a in range(r) if a != axis])
    rule.classes.append((_m(IN(0), axis), _m(OUT0, axis, offset=start, step=step)))
    rule.frozen += [(IN(0), axis), (OUT0, axis)]
    return rule


def _select(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    axis = attrs["axis"] % r
    index = attrs["index"] % ins[0][axis]
    rest = [a for a in range(r) if a != axis]
    rule = _renumber(list(zip(rest, range(len(rest)))))
    rule.classes.append((_m(IN(0), axis), _m(OUT0, None, offset=index)))
    rule.frozen.append((IN(0), axis))
    return rule


def _embedding(ins, outs, attrs) -> NodeRule:
    r = len(ins[0])
    classes = [(_m(IN(0), a), _m(OUT0, a)) for a in range(r)]
    classes.append((_m(OUT0, r), _m(IN(1), 1)))
    return NodeRule(classes)


def _reshape(ins, outs, attrs) -> NodeRule:
    return NodeRule(reshape=True)


RULES: dict[str, Callable[[list[Shape], list[Shape], dict], NodeRule]] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "pixel_shuffle": _pixel_shuffle,
    "pixel_unshuffle": _pixel_shuffle,
    "resize": _pool,
    "linear": _linear,
    "matmul": _matmul,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "softmax": _softmax,
    "max_pool": _pool,
    "avg_pool": _pool,
    "adaptive_avg_pool": _pool,
    "adaptive_max_pool": _pool,
    "mean": _reduce,
    "sum": _reduce,
    "concat": _concat,
    "split": _split,
    "reshape": _reshape,
    "flatten": _reshape,
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "permute": _permute,
    "expand": _expand,
    "slice": _slice,
    "select": _select,
    "embedding": _embedding,
    "quantize": _quant,
    "dequantize": _quant,
    "cast": _elementwise,
    "identity": _elementwise,
    "dropout": _elementwise,
}


def node_rule(graph: "Graph", node: "Node", *, uniform_groups: bool = False) -> NodeRule:
    """The coupling rule of `node`; an op without one refuses every axis.

    uniform_groups: a grouped conv keeps its group count (see `_conv`).
    """
    if node.op == OPAQUE:
        what = node.attrs.get("op_type") or node.attrs.get("target")
        return NodeRule(refuse_all=f"opaque node '{node.name}' ({what})")
    types = [graph.type_of(v) for v in (*node.inputs, *node.outputs)]
    if any(t is None or t.shape is None or any(not isinstance(d, int) for d in t.shape) for t in types):
        return NodeRule(refuse_all=f"node '{node.name}' ({node.op}) has a value without a static shape")
    ins = [tuple(graph.type_of(v).shape) for v in node.inputs]
    outs = [tuple(graph.type_of(v).shape) for v in node.outputs]
    rule = RULES.get(node.op)
    if rule is None and OPS[node.op].elementwise:
        rule = _elementwise
    if rule is None:
        return NodeRule(refuse_all=f"node '{node.name}': no pruning rule for op '{node.op}'")
    if node.op == "conv":
        return _conv(ins, outs, dict(node.attrs), uniform=uniform_groups)
    return rule(ins, outs, dict(node.attrs))
