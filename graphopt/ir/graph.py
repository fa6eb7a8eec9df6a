"""The graphopt IR: a dataflow graph of canonical ops over named values.

- A *value* is a named tensor with a `TensorType`. It is a graph input, a
  parameter (constant data in `graph.params`), or the output of exactly one node.
- A *node* applies a canonical op (`graphopt.ir.ops`) or "opaque" to input values
  and defines output values. Parameters are ordinary inputs: conv's inputs are
  (x, weight, bias), so a weight can be sliced (pruning), replaced by a
  `dequantize` output (int8) or shared by two nodes (tied weights).
- Parameter data is numpy. `Parameter.mask` holds a sparsity mask and
  `Parameter.encoding` a compressed form (codebook, packed low-bit) of `data`.
- `graph.nodes` is kept in topological order. Passes edit only through the verbs
  below (they bump `version`, which invalidates every cached index and the cached
  torch module), never by assigning to node fields.

Opaque nodes carry what the frontend could not map, in `attrs`:
  torch: {"framework": "torch", "target": "aten.pixel_shuffle.default",
          "args": (ValueRef(0), 2), "kwargs": {}}
  onnx:  {"framework": "onnx", "op_type": "NonMaxSuppression", "domain": "",
          "onnx_attrs": {name: python value or numpy array}}
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from graphopt.errors import GraphError, VerificationError
from graphopt.ir.ops import OPAQUE, get_op
from graphopt.ir.types import TensorType


@dataclass
class Parameter:
    """Constant tensor data: weights, biases, statistics, scales, folded constants."""

    data: np.ndarray
    trainable: bool = True
    mask: np.ndarray | None = None  # bool, data.shape: zeros are pruned (magnitude pruning)
    encoding: Any = None  # compressed storage of `data` (codebook, packed low-bit); None = dense


@dataclass
class Value:
    name: str
    type: TensorType | None


class Node:
    """One op application. Read fields freely; change them through Graph verbs."""

    __slots__ = ("name", "op", "inputs", "outputs", "attrs", "meta")

    def __init__(self, name: str, op: str, inputs: Sequence[str], outputs: Sequence[str],
                 attrs: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None):
        self.name = name
        self.op = op
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.outputs: tuple[str, ...] = tuple(outputs)
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.meta: dict[str, Any] = dict(meta or {})  # provenance: module path, source node

    @property
    def output(self) -> str:
        if len(self.outputs) != 1:
            raise GraphError(f"node '{self.name}' has {len(self.outputs)} outputs")
        return self.outputs[0]

    @property
    def is_opaque(self) -> bool:
        return self.op == OPAQUE

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op!r}, {list(self.inputs)} -> {list(self.outputs)})"


class Graph:
    def __init__(self, name: str = "graph"):
        self.name = name
        self.values: dict[str, Value] = {}
        self.params: dict[str, Parameter] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.metadata: dict[str, Any] = {}  # e.g. {"source": "fx" | "onnx", "opset": 17}
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._version = 0
        self._cache: dict[str, tuple[int, Any]] = {}

    # ---- queries ---------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(self._nodes)

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise GraphError(f"no node named '{name}' in graph '{self.name}'") from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def value(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise GraphError(f"no value named '{name}' in graph '{self.name}'") from None

    def type_of(self, name: str) -> TensorType:
        t = self.value(name).type
        if t is None:
            raise GraphError(f"value '{name}' has no type")
        return t

    def is_param(self, name: str) -> bool:
        return name in self.params

    def param(self, name: str) -> Parameter:
        try:
            return self.params[name]
        except KeyError:
            raise GraphError(f"'{name}' is not a parameter of graph '{self.name}'") from None

    def cached(self, key: str, build):
        """Memoize `build()` under `key` until the graph is next edited (no stale analyses)."""
        hit = self._cache.get(key)
        if hit is None or hit[0] != self._version:
            hit = (self._version, build())
            self._cache[key] = hit
        return hit[1]

    def _producers(self) -> dict[str, Node]:
        return self.cached("producers", lambda: {o: n for n in self._nodes for o in n.outputs})

    def _users(self) -> dict[str, list[Node]]:
        def build():
            users: dict[str, list[Node]] = {}
            for n in self._nodes:
                for i in dict.fromkeys(n.inputs):
                    users.setdefault(i, []).append(n)
            return users
        return self.cached("users", build)

    def producer(self, value: str) -> Node | None:
        """The node defining `value`; None for graph inputs and parameters."""
        return self._producers().get(value)

    def users(self, value: str) -> list[Node]:
        """Nodes reading `value`, in graph order, each once."""
        return list(self._users().get(value, ()))

    def is_used(self, value: str) -> bool:
        return bool(self._users().get(value)) or value in self.outputs

    def position(self, node: Node) -> int:
        return self.cached("positions", lambda: {n.name: i for i, n in enumerate(self._nodes)})[node.name]

    def nx(self) -> nx.MultiDiGraph:
        """A fresh networkx view: one vertex per node, an edge per value use (key = value name).

        Graph inputs and parameters are not vertices; analyses read them from
        `graph.inputs` / `graph.params`. The view is rebuilt after every edit.
        """
        def build():
            g = nx.MultiDiGraph()
            for n in self._nodes:
                g.add_node(n.name, op=n.op)
            prod = self._producers()
            for n in self._nodes:
                for v in n.inputs:
                    if v in prod:
                        g.add_edge(prod[v].name, n.name, key=v)
            return g
        return self.cached("nx", build)

    def unique_name(self, base: str) -> str:
        base = base or "v"
        if base not in self.values and base not in self._by_name:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in self.values and cand not in self._by_name:
                return cand
        raise AssertionError("unreachable")

    # ---- building --------------------------------------------------------------
    def _touch(self) -> None:
        self._version += 1

    def _new_value(self, name: str, type_: TensorType | None) -> str:
        if name in self.values:
            raise GraphError(f"value '{name}' already exists in graph '{self.name}'")
        self.values[name] = Value(name, type_)
        return name

    def add_input(self, name: str, type_: TensorType) -> str:
        self._new_value(name, type_)
        self.inputs.append(name)
        self._touch()
        return name

    def set_outputs(self, names: Sequence[str]) -> None:
        for n in names:
            self.value(n)
        self.outputs = list(names)
        self._touch()

    def add_param(self, name: str, data: np.ndarray, *, trainable: bool | None = None,
                  unique: bool = True) -> str:
        """Add constant `data` as a parameter value; returns its (possibly uniquified) name."""
        data = np.asarray(data)
        if unique:
            name = self.unique_name(name)
        if trainable is None:
            trainable = np.issubdtype(data.dtype, np.floating)
        self._new_value(name, TensorType.of(data))
        self.params[name] = Parameter(data, trainable=trainable)
        self._touch()
        return name

    def add_node(self, op: str, inputs: Sequence[str], *, attrs: Mapping[str, Any] | None = None,
                 name: str | None = None, outputs: Sequence[str] | None = None,
                 output_types: Sequence[TensorType | None] | None = None,
                 meta: Mapping[str, Any] | None = None, infer: bool = True) -> Node:
        """Create a node after the last producer of its inputs and return it.

        Output names default to the node name (`name`, `name_1`, ... for several);
        output types are inferred for canonical ops unless given.
        """
        for v in inputs:
            self.value(v)
        attrs = dict(attrs or {})
        if op != OPAQUE:
            attrs = get_op(op).with_defaults(attrs)
        name = self.unique_name(name or op)
        if outputs is None:
            count = 1 if op == OPAQUE else get_op(op).output_count(attrs)
            if output_types is not None:
                count = len(output_types)
            outputs = [name] if count == 1 else [self.unique_name(f"{name}_{i}") for i in range(count)]
        node = Node(name, op, inputs, outputs, attrs, meta)
        if output_types is None:
            output_types = self._infer(node) if infer and op != OPAQUE else [None] * len(outputs)
        if len(output_types) != len(outputs):
            raise GraphError(f"node '{name}': {len(outputs)} outputs but {len(output_types)} types")
        for o, t in zip(outputs, output_types):
            self._new_value(o, t)
        prod = self._producers()
        after = max((self.position(prod[v]) for v in inputs if v in prod), default=-1)
        self._nodes.insert(after + 1, node)
        self._by_name[name] = node
        self._touch()
        return node

    def _infer(self, node: Node) -> list[TensorType | None]:
        from graphopt.ir.shape_inference import infer_output_types
        return infer_output_types(self, node)

    # ---- editing verbs -----------------------------------------------------------
    def set_inputs(self, node: Node, inputs: Sequence[str]) -> None:
        """Rewire `node`'s inputs; moves it later if a new input is produced after it."""
        for v in inputs:
            self.value(v)
        node.inputs = tuple(inputs)
        self._touch()
        self._restore_order(node)

    def set_input(self, node: Node, index: int, value: str) -> None:
        ins = list(node.inputs)
        ins[index] = value
        self.set_inputs(node, ins)

    def set_attrs(self, node: Node, **attrs: Any) -> None:
        if node.op != OPAQUE:
            get_op(node.op).with_defaults({**node.attrs, **attrs})
        node.attrs.update(attrs)
        self._touch()

    def rewrite_node(self, node: Node, op: str, inputs: Sequence[str],
                     attrs: Mapping[str, Any] | None = None) -> Node:
        """Turn `node` into a different op computing the same output names."""
        attrs = dict(attrs or {})
        if op != OPAQUE:
            attrs = get_op(op).with_defaults(attrs)
        node.op, node.attrs = op, attrs
        self.set_inputs(node, inputs)
        return node

    def set_type(self, value: str, type_: TensorType | None) -> None:
        self.value(value).type = type_
        self._touch()

    def replace_all_uses(self, old: str, new: str, *, exclude: Iterable[Node] = ()) -> int:
        """Make every reader of `old` (graph outputs included) read `new`; returns the count."""
        self.value(new)
        skip = {n.name for n in exclude}
        count = 0
        for n in self.users(old):
            if n.name in skip:
                continue
            self.set_inputs(n, [new if v == old else v for v in n.inputs])
            count += 1
        if old in self.outputs:
            self.outputs = [new if v == old else v for v in self.outputs]
            count += 1
        self._touch()
        return count

    def insert_on_edge(self, value: str, op: str, *, extra_inputs: Sequence[str] = (),
                       attrs: Mapping[str, Any] | None = None, name: str | None = None,
                       readers: Sequence[Node] | None = None) -> Node:
        """Insert `op(value, *extra_inputs)` between `value` and its readers (all by default)."""
        to_outputs = readers is None and value in self.outputs
        readers = self.users(value) if readers is None else list(readers)
        node = self.add_node(op, [value, *extra_inputs], attrs=attrs, name=name)
        for r in readers:
            self.set_inputs(r, [node.output if v == value else v for v in r.inputs])
        if to_outputs:
            self.outputs = [node.output if v == value else v for v in self.outputs]
        self._touch()
        return node

    def remove_node(self, node: Node) -> None:
        """Delete `node` and its output values; they must have no readers left."""
        for o in node.outputs:
            if self.is_used(o):
                readers = [n.name for n in self.users(o)] + (["<graph output>"] if o in self.outputs else [])
                raise GraphError(f"cannot remove node '{node.name}': output '{o}' is read by {readers}")
        self._nodes.remove(node)
        del self._by_name[node.name]
        for o in node.outputs:
            del self.values[o]
        self._touch()

    def bypass_node(self, node: Node, input_index: int = 0) -> None:
        """Remove a single-output node whose output equals input `input_index` (identity-like)."""
        self.replace_all_uses(node.output, node.inputs[input_index])
        self.remove_node(node)

    def set_param(self, name: str, data: np.ndarray) -> None:
        """Replace a parameter's data (its type follows; mask and encoding are dropped)."""
        p = self.param(name)
        data = np.asarray(data)
        self.params[name] = Parameter(data, trainable=p.trainable)
        self.values[name].type = TensorType.of(data)
        self._touch()

    def slice_param(self, name: str, axis: int, keep: Sequence[int]) -> None:
        """Keep only indices `keep` of parameter `name` along `axis` (mask sliced alike)."""
        p = self.param(name)
        keep = np.asarray(keep, dtype=np.int64)
        mask = None if p.mask is None else np.take(p.mask, keep, axis=axis)
        self.set_param(name, np.take(p.data, keep, axis=axis))
        self.params[name].mask = mask

    def remove_param(self, name: str) -> None:
        if self.is_used(name):
            raise GraphError(f"cannot remove parameter '{name}': it is still read")
        del self.params[name]
        del self.values[name]
        self._touch()

    def cleanup(self) -> dict[str, int]:
        """Remove nodes, parameters and values that no graph output depends on.

        Never touches graph inputs or outputs. Returns counts of what was removed.
        """
        live: set[str] = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self._nodes):
            if any(o in live for o in n.outputs):
                keep.append(n)
                live.update(n.inputs)
        keep.reverse()
        kept = {n.name for n in keep}
        dead_nodes = [n for n in self._nodes if n.name not in kept]
        for n in dead_nodes:
            del self._by_name[n.name]
            for o in n.outputs:
                del self.values[o]
        self._nodes = keep
        dead_params = [p for p in self.params if p not in live]
        for p in dead_params:
            del self.params[p]
            del self.values[p]
        self._touch()
        return {"nodes": len(dead_nodes), "params": len(dead_params)}

    def toposort(self) -> None:
        """Reorder nodes topologically; raises VerificationError naming a node on a cycle."""
        try:
            order = list(nx.lexicographical_topological_sort(
                self.nx(), key=lambda name: self.position(self._by_name[name])))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self.nx())
            names = " -> ".join(e[0] for e in cycle)
            raise VerificationError(f"the graph has a cycle: {names} -> {cycle[0][0]}",
                                    node=cycle[0][0]) from None
        self._nodes = [self._by_name[n] for n in order]
        self._touch()

    def _restore_order(self, node: Node) -> None:
        prod = self._producers()
        pos = self.position(node)
        if any(v in prod and self.position(prod[v]) > pos for v in node.inputs):
            self.toposort()

    # ---- whole-graph operations ----------------------------------------------------
    def copy(self) -> "Graph":
        """A deep copy: nodes, values and parameter arrays are all new objects."""
        g = Graph(self.name)
        g.values = {k: Value(v.name, v.type) for k, v in self.values.items()}
        g.params = {k: Parameter(p.data.copy(), p.trainable,
                                 None if p.mask is None else p.mask.copy(), copy.deepcopy(p.encoding))
                    for k, p in self.params.items()}
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.metadata = copy.deepcopy(self.metadata)
        g._nodes = [Node(n.name, n.op, n.inputs, n.outputs, copy.deepcopy(n.attrs), copy.deepcopy(n.meta))
                    for n in self._nodes]
        g._by_name = {n.name: n for n in g._nodes}
        return g

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self._nodes:
            key = n.op if not n.is_opaque else f"opaque:{n.attrs.get('target') or n.attrs.get('op_type')}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def num_parameters(self) -> int:
        return int(sum(p.data.size for p in self.params.values() if p.trainable))

    def verify(self, *, check_types: bool = True) -> None:
        """Raise VerificationError naming the offending node if the graph is malformed."""
        from graphopt.ir.verifier import verify_graph
        verify_graph(self, check_types=check_types)

    def print(self, file=None) -> None:
        print(str(self), file=file)

    def __str__(self) -> str:
        from graphopt.ir.printer import format_graph
        return format_graph(self)

    def __repr__(self) -> str:
        return (f"<Graph {self.name!r}: {len(self._nodes)} nodes, {len(self.params)} params, "
                f"inputs={self.inputs}, outputs={self.outputs}>")

    # ---- emission and execution ------------------------------------------------------
    def to_torch(self):
        """A trainable `torch.fx.GraphModule` computing this graph (parameters are nn.Parameters)."""
        from graphopt.emit.torch import emit_torch
        return emit_torch(self)

    def to_onnx(self, opset: int | None = None):
        """An `onnx.ModelProto` that passes the full checker and runs in onnxruntime."""
        from graphopt.emit.onnx import emit_onnx
        return emit_onnx(self, opset=opset)

    def save_onnx(self, path: str | Path, opset: int | None = None) -> Path:
        """Write `to_onnx()` atomically to `path`."""
        from graphopt.emit.onnx import save_onnx
        return save_onnx(self, path, opset=opset)

    def run(self, inputs) -> list[np.ndarray]:
        """Execute on inputs (a sequence in `graph.inputs` order, or a name -> array dict).

        Runs through `to_torch()`; a graph holding opaque ONNX nodes runs in onnxruntime.
        """
        from graphopt.backends.reference import run_graph
        return run_graph(self, inputs)
