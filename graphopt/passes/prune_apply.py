"""Remove chosen units of dependency groups from a graph, through the graph's verbs.

All groups are cut at once: the coordinates every group removes are gathered
per (tensor, axis) first, so groups sharing an axis (the inputs of a concat)
never see each other's shifted positions. Parameters are sliced with
`slice_param`; ops whose attributes carry sizes are resized (reshape and
expand shapes, split sizes, layer-norm shapes, conv and transposed conv groups); then types are
re-inferred once and checked against the sizes the groups predict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from graphopt.errors import GraphError

if TYPE_CHECKING:
    from graphopt.analysis.dependency import Group
    from graphopt.ir.graph import Graph, Node


def prune_units(graph: "Graph", removals: Mapping["Group", Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Remove `removals[group]` (unit indices) of each group; returns the new shape of every resized tensor."""
    cuts: dict[tuple[str, int], set[int]] = {}
    for group, units in removals.items():
        for m in group.members:
            gone = cuts.setdefault((m.value, m.axis), set())
            for u in units:
                gone.update(int(c) for c in m.positions[u])
    old = {v: tuple(graph.type_of(v).shape) for v, _ in cuts}
    new = {v: list(s) for v, s in old.items()}
    for (v, axis), gone in cuts.items():
        new[v][axis] -= len(gone)
    for (v, axis), gone in sorted(cuts.items()):
        if graph.is_param(v) and gone:
            keep = [c for c in range(old[v][axis]) if c not in gone]
            graph.slice_param(v, axis, keep)
    touched = set(new)
    for node in graph.nodes:
        if any(v in touched for v in (*node.inputs, *node.outputs)):
            _resize_attrs(graph, node, old, new)
    graph.infer_types(from_values=touched)
    for v, shape in new.items():
        got = tuple(graph.type_of(v).shape)
        if got != tuple(shape):
            producer = graph.producer(v)
            where = f"node '{producer.name}' ({producer.op})" if producer else "a parameter"
            raise GraphError(f"pruning left '{v}' (from {where}) with shape {list(got)}, expected {list(shape)}")
    return {v: tuple(s) for v, s in new.items()}


def _shape(graph: "Graph", v: str, table: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    return tuple(table[v]) if v in table else tuple(graph.type_of(v).shape)


def _resize_attrs(graph: "Graph", node: "Node", old: Mapping, new: Mapping) -> None:
    """Rewrite the size-carrying attributes of `node` for its inputs' and outputs' new shapes."""
    x_old, x_new = _shape(graph, node.inputs[0], old), _shape(graph, node.inputs[0], new)
    y_old, y_new = _shape(graph, node.outputs[0], old), _shape(graph, node.outputs[0], new)
    if node.op == "reshape" and y_old != y_new:
        shape = []
        for i, d in enumerate(node.attrs["shape"]):
            same_out = i < len(y_old) and y_old[i] == y_new[i]
            same_in = i < len(x_old) and x_old[i] == x_new[i]
            keep = (d == 0 and same_in and same_out) or (d == -1 and same_out)
            shape.append(d if keep else y_new[i])
        graph.set_attrs(node, shape=shape)
    elif node.op == "expand" and y_old != y_new:
        shape = [d if d == -1 or y_old[i] == y_new[i] else y_new[i] for i, d in enumerate(node.attrs["shape"])]
        graph.set_attrs(node, shape=shape)
    elif node.op == "split":
        axis = node.attrs["axis"]
        sizes = [_shape(graph, o, new)[axis] for o in node.outputs]
        if list(sizes) != list(node.attrs["sizes"]):
            graph.set_attrs(node, sizes=sizes)
    elif node.op == "layer_norm" and x_old != x_new:
        k = len(node.attrs["normalized_shape"])
        graph.set_attrs(node, normalized_shape=list(x_new[len(x_new) - k :]))
    elif node.op == "conv" and node.attrs["groups"] > 1 and x_old[1] != x_new[1]:
        per_group = _shape(graph, node.inputs[1], new)[1]  # whole groups removed, or each group narrowed
        graph.set_attrs(node, groups=x_new[1] // per_group)
    elif node.op == "conv_transpose" and node.attrs["groups"] > 1 and y_old[1] != y_new[1]:
        per_group = _shape(graph, node.inputs[1], new)[1]  # whole groups removed: out channels per group stay
        graph.set_attrs(node, groups=y_new[1] // per_group)


def keep_count(units: int, ratio: float, step: int = 1) -> int:
    """Units to keep: what removing `ratio` of them leaves, rounded down to a multiple of `step`, at least one step."""
    keep = units - int(np.floor(units * ratio + 1e-9))
    if step > 1:
        keep = max((keep // step) * step, step)
    return min(max(keep, 1), units)
