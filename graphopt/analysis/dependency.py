"""Dependency groups: the parameter slices and value axes that must be pruned together.

Every output channel of a conv, transposed conv, linear, parameter matmul or embedding starts
as a *base unit*. Its positions are followed through the graph in both
directions (`dep_rules` says how each op couples its axes; `dep_flow` moves
the positions), and stored per value in *slots* (a value's positions on a set
of axes). Two base units that land on the same position of any tensor must
be pruned together and are merged (union-find): a residual add merges the
channels of the convs feeding it, an attention score's head axis merges the
query and key columns of one head, a conv group merges its channels.

After propagation every slot must *factor*: one axis (the unit axis) whose
coordinates the units own, every other tracked axis spanned whole, so that
removing any set of units leaves a rectangular tensor. Slots that do not are
coarsened (units sharing a coordinate on an axis merged) until they do: a
feature axis split into (heads, head_dim) makes whole heads the units.

A *group* is a connected set of units and the sources they came from
(networkx components). A group is reported as not prunable, with the reason,
when a unit reaches a graph input or output, an opaque node or an op without
a rule, crosses an axis the op forbids (a conv's spatial axis, a softmax's
axis), would remove fixed positions a slice or select reads, or has a single
unit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from graphopt.analysis.dep_flow import Flow, flat_keys, map_flow, reshape_flow, reshape_segments
from graphopt.analysis.dep_rules import NodeRule, node_rule

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

SOURCE_OPS = ("conv", "conv_transpose", "linear", "matmul", "embedding")


@dataclass(frozen=True, eq=False)  # identity: members hold arrays
class GroupMember:
    """One tensor a group prunes: `positions[u]` are unit u's coordinates on `axis` (of `size`)."""

    value: str
    axis: int
    size: int
    is_param: bool
    positions: tuple[np.ndarray, ...]

    def keep(self, removed_units) -> np.ndarray:
        """The coordinates on `axis` left when `removed_units` are pruned."""
        gone = set()
        for u in removed_units:
            gone.update(int(c) for c in self.positions[u])
        return np.array([c for c in range(self.size) if c not in gone], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Group:
    """Units pruned together, where they sit, and whether pruning them is safe."""

    index: int
    sources: tuple[str, ...]  # nodes whose output channels started the group
    kind: str  # "channels", "heads" or "ffn"
    units: int
    members: tuple[GroupMember, ...]
    reason: str | None  # why the group must not be pruned; None when it may

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def name(self) -> str:
        more = f" +{len(self.sources) - 1}" if len(self.sources) > 1 else ""
        return f"{self.sources[0]}{more}"

    def params(self) -> tuple[GroupMember, ...]:
        return tuple(m for m in self.members if m.is_param)

    def describe(self) -> str:
        status = "prunable" if self.prunable else f"skipped: {self.reason}"
        size = f"{self.units} units, {len(self.members)} tensors"
        return f"group {self.index} [{self.kind}] {self.name}: {size}, {status}"


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, u: int) -> int:
        root = u
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[u] != root:
            self.parent[u], u = root, self.parent[u]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


class _Slot:
    """Positions of base units on a fixed set of axes of one value (flat keys, sorted, one unit each)."""

    def __init__(self, value: str, axes: tuple[int, ...], shape: tuple[int, ...]):
        self.value, self.axes, self.shape = value, axes, shape
        self.keys = np.zeros(0, dtype=np.int64)
        self.units = np.zeros(0, dtype=np.int64)

    def add(self, flow: Flow, uf: _UnionFind) -> np.ndarray:
        """Record `flow` (on this slot's axes); merge units meeting on a position; rows that were new."""
        keys = flat_keys(flow.coords, self.axes, self.shape)
        at = np.minimum(np.searchsorted(self.keys, keys), max(self.keys.size - 1, 0))
        known = (self.keys.size > 0) & (self.keys[at] == keys) if self.keys.size else np.zeros(keys.size, bool)
        meets = [(self.units[at[known]], flow.units[known])]
        fresh, first = np.unique(keys[~known], return_index=True)  # first row of each new position
        rows = np.flatnonzero(~known)
        fresh_units = flow.units[rows[first]]
        again = np.searchsorted(fresh, keys[rows])  # every new row against its position's first unit
        meets.append((fresh_units[again], flow.units[rows]))
        for a, b in meets:
            differ = a != b
            for x, y in set(zip(a[differ].tolist(), b[differ].tolist())):
                uf.union(x, y)
        new = np.zeros(keys.size, dtype=bool)
        new[rows[first]] = True
        if fresh.size:
            merged = np.concatenate([self.keys, fresh])
            order = np.argsort(merged, kind="stable")
            self.keys, self.units = merged[order], np.concatenate([self.units, fresh_units])[order]
        return new

    def flow(self) -> Flow:
        sizes = tuple(self.shape[a] for a in self.axes)
        if self.axes:
            coords = np.stack(np.unravel_index(self.keys, sizes), axis=1)
        else:
            coords = np.zeros((self.keys.size, 0), np.int64)
        return Flow(self.axes, coords.astype(np.int64), self.units.copy())


class _Analysis:
    def __init__(self, graph: "Graph", uniform: frozenset[str] = frozenset()):
        self.graph = graph
        self.uniform = uniform  # grouped convs that keep their group count
        self.uf = _UnionFind()
        self.seed_of: list[str] = []
        self.slots: dict[str, list[_Slot]] = {}
        self.rules: dict[str, NodeRule] = {}
        self.refused: dict[int, str] = {}  # base unit -> first reason
        self.frozen: dict[tuple[str, int], str] = {}  # (value, axis) -> node reading fixed positions
        self.queue: deque[tuple[str, Flow]] = deque()
        self.coarsened: set[str] = set()  # values whose positions forced units to merge
        self.boundary = set(graph.inputs) | set(graph.outputs)

    # ---- propagation ---------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph.nodes:
            seed = self._seed(node)
            if seed is not None:
                self._arrive(node.outputs[0], seed)
                self._drain()

    def _seed(self, node: "Node") -> Flow | None:
        if node.op not in SOURCE_OPS:
            return None
        out = self.graph.type_of(node.outputs[0])
        if not out.is_static or not out.shape:
            return None
        axis = len(out.shape) - 1
        if node.op in ("conv", "conv_transpose"):
            axis = 1
        elif node.op == "matmul":
            a, b = (self.graph.is_param(v) for v in node.inputs)
            if not (a or b) or len(out.shape) < 2:
                return None
            axis = len(out.shape) - (1 if b else 2)
        units = self.uf.add(out.shape[axis])
        self.seed_of.extend([node.name] * len(units))
        return Flow.along(axis, units)

    def _refuse(self, units: np.ndarray, reason: str) -> None:
        for u in np.unique(units).tolist():
            self.refused.setdefault(u, reason)

    def _rule(self, node: "Node") -> NodeRule:
        rule = self.rules.get(node.name)
        if rule is None:
            rule = self.rules[node.name] = node_rule(self.graph, node, uniform_groups=node.name in self.uniform)
        return rule

    def _arrive(self, value: str, flow: Flow) -> None:
        if value in self.boundary:
            where = "input" if value in self.graph.inputs else "output"
            self._refuse(flow.units, f"reaches graph {where} '{value}'")
            return
        shape = tuple(self.graph.type_of(value).shape)
        slots = self.slots.setdefault(value, [])
        meet = [s for s in slots if set(s.axes) & set(flow.axes)]
        if len(meet) == 1:  # seen on the slot's axes (its units span every other axis whole)
            slot, grown = meet[0], False
            flow = flow.project(tuple(a for a in flow.axes if a in slot.axes))
            axes = slot.axes
        else:  # a new slot, or one joining several slots into one
            axes = tuple(sorted(set(flow.axes).union(*(s.axes for s in meet))))
            slot, grown = _Slot(value, axes, shape), bool(meet)
            for old in meet:
                slots.remove(old)
                slot.add(old.flow().expand_to(axes, shape), self.uf)
            slots.append(slot)
        flow = flow.expand_to(axes, shape)
        new = slot.add(flow, self.uf)
        if grown:
            self.queue.append((value, slot.flow()))
        elif new.any():
            self.queue.append((value, Flow(axes, flow.coords[new], flow.units[new])))

    def _drain(self) -> None:
        while self.queue:
            value, flow = self.queue.popleft()
            producer = self.graph.producer(value)
            if producer is not None:
                self._cross(producer, ("out", producer.outputs.index(value)), flow)
            for user in self.graph.users(value):
                for i, v in enumerate(user.inputs):
                    if v == value:
                        self._cross(user, ("in", i), flow)

    def _cross(self, node: "Node", port, flow: Flow) -> None:
        """Carry `flow`, arriving at `port` of `node`, to the node's other ports."""
        rule = self._rule(node)
        if rule.refuse_all:
            self._refuse(flow.units, rule.refuse_all)
            return
        value = node.inputs[port[1]] if port[0] == "in" else node.outputs[port[1]]
        for a in flow.axes:
            reason = rule.refuse.get((port, a))
            if reason:
                self._refuse(flow.units, f"crosses {reason} at node '{node.name}' ({node.op})")
                return
        for p, a in rule.frozen:
            if p == port and a in flow.axes:
                self.frozen.setdefault((value, a), node.name)
        if rule.reshape:
            src, dst = (node.inputs[0], node.outputs[0]) if port[0] == "in" else (node.outputs[0], node.inputs[0])
            moved = reshape_flow(flow, tuple(self.graph.type_of(src).shape), tuple(self.graph.type_of(dst).shape))
            if moved is None:
                self._refuse(flow.units, f"reshape node '{node.name}' does not factor into aligned axes")
            else:
                self._arrive(dst, moved)
            return
        ports = [("in", i) for i in range(len(node.inputs))] + [("out", k) for k in range(len(node.outputs))]
        for q in ports:
            if q == port:
                continue
            target = node.inputs[q[1]] if q[0] == "in" else node.outputs[q[1]]
            moved = map_flow(flow, port, q, rule.classes, tuple(self.graph.type_of(target).shape))
            if moved is not None:
                self._arrive(target, moved)

    # ---- factoring -----------------------------------------------------------------
    def roots(self) -> np.ndarray:
        """The merged unit of every base unit."""
        return np.array([self.uf.find(u) for u in range(len(self.uf.parent))], dtype=np.int64)

    def factor(self) -> dict[tuple[str, tuple[int, ...]], int | None]:
        """Merge units until every slot factors; the unit axis of each slot (None: cannot factor)."""
        flows = [(slot, slot.flow()) for ss in self.slots.values() for slot in ss]
        while True:
            merged = False
            root_of = self.roots()
            axes_of: dict[tuple[str, tuple[int, ...]], int | None] = {}
            for slot, flow in flows:
                roots = root_of[flow.units]
                axis = _unit_axis(slot, flow, roots)
                if axis is None and self._coarsen(slot, flow, roots):
                    merged = True
                    self.coarsened.add(slot.value)
                axes_of[(slot.value, slot.axes)] = axis
            if not merged:
                return axes_of

    def _coarsen(self, slot: _Slot, flow: Flow, roots: np.ndarray) -> bool:
        """Merge units sharing a coordinate on the axis that keeps the most units; False if none helps."""
        best = None
        for j, a in enumerate(slot.axes):
            if slot.shape[a] == 1:
                continue
            uf = _UnionFind()
            local = {r: i for i, r in enumerate(np.unique(roots).tolist())}
            uf.add(len(local))
            first: dict[int, int] = {}
            for c, r in zip(flow.coords[:, j].tolist(), roots.tolist()):
                uf.union(first.setdefault(c, local[r]), local[r])
            count = len({uf.find(i) for i in range(len(local))})
            if count < len(local) and (best is None or count > best[0]):
                best = (count, j)
        if best is None:
            return False
        j = best[1]
        first = {}
        for c, r in zip(flow.coords[:, j].tolist(), roots.tolist()):
            self.uf.union(first.setdefault(c, r), r)
        return True


def _unit_axis(slot: _Slot, flow: Flow, roots: np.ndarray) -> int | None:
    """The axis whose coordinates the units own, every other axis whole; None if there is none."""
    _, unit = np.unique(roots, return_inverse=True)
    rows = np.bincount(unit)
    for j, a in enumerate(slot.axes):
        size = slot.shape[a]
        span = int(np.prod([slot.shape[b] for b in slot.axes if b != a], dtype=np.int64))
        pairs = np.unique(unit * size + flow.coords[:, j])  # distinct (unit, coordinate)
        owned = np.bincount(pairs // size, minlength=rows.size)
        if np.array_equal(rows, owned * span) and np.unique(pairs % size).size == pairs.size:
            return a
    return None


def dependency_groups(graph: "Graph") -> tuple[Group, ...]:
    """Every dependency group of `graph`, prunable or not (with the reason), memoized by graph version."""
    return graph.cached("dependency_groups", lambda: _groups(graph))


def _groups(graph: "Graph") -> tuple[Group, ...]:
    """Groups with grouped convs pruned by whole groups; where that leaves one unit, by uniform channels."""
    groups = _analyse(graph, frozenset())
    grouped = {n.name for n in graph.nodes if n.op == "conv" and n.attrs["groups"] > 1}
    stuck = frozenset(
        n for g in groups if g.units == 1 for m in g.params() for n in grouped if graph.node(n).inputs[1] == m.value
    )
    if stuck:
        retry = _analyse(graph, stuck)
        if _prunable_units(retry) > _prunable_units(groups):
            return retry
    return groups


def _prunable_units(groups: tuple[Group, ...]) -> int:
    return sum(g.units for g in groups if g.prunable)


def _analyse(graph: "Graph", uniform: frozenset[str]) -> tuple[Group, ...]:
    an = _Analysis(graph, uniform)
    an.run()
    unit_axes = an.factor()
    root_of = an.roots()
    g = nx.Graph()
    seeds = list(dict.fromkeys(an.seed_of))
    names = {name: i for i, name in enumerate(seeds)}
    seed_index = np.fromiter((names[x] for x in an.seed_of), dtype=np.int64, count=len(an.seed_of))
    pairs = np.unique(np.stack([seed_index, root_of]), axis=1)
    g.add_edges_from((("source", seeds[a]), ("unit", b)) for a, b in zip(pairs[0].tolist(), pairs[1].tolist()))
    refused: dict[int, str] = {}
    for u, reason in an.refused.items():
        refused.setdefault(int(root_of[u]), reason)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    comps = sorted(nx.connected_components(g), key=lambda c: min(order[n[1]] for n in c if n[0] == "source"))
    group_of = np.full(len(root_of), -1, dtype=np.int64)  # root -> group
    local = np.full(len(root_of), -1, dtype=np.int64)  # root -> unit index in its group
    parts = []
    for index, comp in enumerate(comps):
        sources = tuple(sorted((n[1] for n in comp if n[0] == "source"), key=order.__getitem__))
        roots = sorted(n[1] for n in comp if n[0] == "unit")
        group_of[roots], local[roots] = index, np.arange(len(roots))
        reason = next((refused[r] for r in roots if r in refused), None)
        parts.append([sources, len(roots), [], reason])
    for slot in (s for ss in an.slots.values() for s in ss):
        _add_members(an, graph, slot, root_of, group_of, local, unit_axes, parts)
    groups = []
    for index, (sources, units, members, reason) in enumerate(parts):
        if reason is None and units < 2:
            reason = _single_unit_reason(graph, members, an.coarsened)
        members.sort(key=lambda m: (not m.is_param, m.value))
        groups.append(Group(index, sources, _kind(graph, members), units, tuple(members), reason))
    return tuple(groups)


def _single_unit_reason(graph: "Graph", members: list[GroupMember], coarsened: set[str]) -> str:
    """Why a group has one unit: a reshape that mixes channels with another axis, or nothing to choose."""
    for m in members:
        node = graph.producer(m.value)
        if m.value in coarsened or (node is not None and node.op in ("reshape", "flatten") and _mixes(graph, node)):
            where = f"reshape '{node.name}'" if node is not None else f"'{m.value}'"
            return f"{where} splits channels across axes (an ambiguous factorisation): all merged into one unit"
    return "a single unit: nothing to choose"


def _mixes(graph: "Graph", node: "Node") -> bool:
    src, dst = (tuple(graph.type_of(v).shape) for v in (node.inputs[0], node.outputs[0]))
    segments = reshape_segments(src, dst) or []
    return any(len(a) > 1 and len(b) > 1 for a, b in segments)


def _add_members(an: _Analysis, graph, slot: _Slot, root_of, group_of, local, unit_axes, parts) -> None:
    """Record `slot` as a member of every group with units on it (or why those groups cannot be pruned)."""
    flow = slot.flow()
    roots = root_of[flow.units]
    axis = unit_axes[(slot.value, slot.axes)]
    for gi in np.unique(group_of[roots]).tolist():
        part = parts[gi]
        if axis is None:
            part[3] = part[3] or f"the positions on '{slot.value}' do not factor into one prunable axis"
            continue
        if (slot.value, axis) in an.frozen:
            node = an.frozen[(slot.value, axis)]
            part[3] = part[3] or f"node '{node}' reads fixed positions of '{slot.value}' along axis {axis}"
        rows = group_of[roots] == gi
        unit = local[roots[rows]]
        coords = flow.coords[rows, slot.axes.index(axis)]
        pairs = np.unique(unit * slot.shape[axis] + coords)
        bounds = np.searchsorted(pairs // slot.shape[axis], np.arange(part[1] + 1))
        coords = pairs % slot.shape[axis]
        positions = tuple(coords[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        part[2].append(GroupMember(slot.value, axis, slot.shape[axis], graph.is_param(slot.value), positions))


def _kind(graph: "Graph", members: list[GroupMember]) -> str:
    """'heads' when a member is a batch axis of an attention matmul; 'ffn' for linear -> activation -> linear."""
    for m in members:
        for user in graph.users(m.value):
            if user.op == "matmul" and not graph.is_param(m.value):
                rank = len(graph.type_of(m.value).shape)
                if m.axis < rank - 2:
                    return "heads"
    values = [m for m in members if not m.is_param]
    linear_out = [graph.producer(m.value) for m in values]
    if (
        values
        and all(p is not None and (p.op == "linear" or len(p.inputs) == 1) for p in linear_out)
        and sum(p.op == "linear" for p in linear_out) == 1
        and all(u.op == "linear" or len(u.inputs) == 1 for m in values for u in graph.users(m.value))
        and all(graph.producer(m.value).op not in ("layer_norm", "batch_norm") for m in values)
    ):
        return "ffn"
    return "channels"


def format_groups(groups: tuple[Group, ...]) -> str:
    return "\n".join(g.describe() for g in groups)
