"""The graphopt IR: a dataflow graph of canonical ops over named values.

- A *value* is a named tensor with a `TensorType`. It is a graph input, a
  parameter (constant data in `graph.params`), or the output of exactly one node.
- A *node* applies a canonical op (`graphopt.ir.ops`) or "opaque" to input values
  and defines output values. Parameters are ordinary inputs: conv's inputs are
  (x, weight, bias), so a weight can be sliced (pruning), replaced by a
  `dequantize` output (int8) or shared by two nodes (tied weights).

The rules every pass may rely on (ARCHITECTURE.md, "The IR's rules"):
- Everything is changed through the verbs below, and every verb bumps
  `version`, which invalidates every cached analysis and the cached torch
  module. Nodes, values and parameters are read-only from outside: node fields
  are properties, `attrs` is a frozen mapping, parameter arrays are read-only.
- `Parameter.data` is always the effective tensor: entries a mask prunes are
  zero in it, and an encoding decodes exactly to it.
- Producers and users are kept by the verbs, so an edit costs what it touches.
  Topological order is restored lazily, once, when `graph.nodes` is next read.
- Types are re-inferred by `infer_types` after an edit, never patched by hand.

Opaque nodes carry what the frontend could not map, in `attrs`:
  torch: {"framework": "torch", "target": "aten.pixel_shuffle.default",
          "args": (ValueRef(0), 2), "kwargs": {}}
  onnx:  {"framework": "onnx", "op_type": "NonMaxSuppression", "domain": "",
          "onnx_attrs": {name: python value or numpy array}}
"""

from __future__ import annotations

import copy
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

from graphopt.errors import GraphError, VerificationError
from graphopt.ir.encodings import Encoding, take_encoding
from graphopt.ir.ops import OPAQUE, get_op
from graphopt.ir.types import TensorType, dtype_from_numpy


def frozen_array(array: Any, *, what: str = "array") -> np.ndarray:
    """A read-only copy of `array` (no copy when it is already a read-only array we made)."""
    if isinstance(array, np.ndarray) and _frozen_view(array):
        return array
    try:
        owned = np.array(array, copy=True)
    except Exception as e:
        raise GraphError(f"{what}: cannot be made an array ({e})") from None
    if owned.dtype == object:
        raise GraphError(f"{what}: object arrays are not tensors")
    owned.setflags(write=False)
    view = owned.view()  # handed out: its WRITEABLE flag cannot be turned back on
    return view


def _frozen_view(array: np.ndarray) -> bool:
    """True for a read-only view whose base is read-only too (what `frozen_array` returns)."""
    base = array.base
    return not array.flags.writeable and isinstance(base, np.ndarray) and base.base is None and not base.flags.writeable


class FrozenAttrs(dict):
    """A node's attributes: a dict that refuses edits (use `graph.set_attrs`)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("node attributes are read-only; change them with graph.set_attrs")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _refuse

    def __reduce__(self):
        return (FrozenAttrs, (dict(self),))

    def __deepcopy__(self, memo):
        return FrozenAttrs({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __copy__(self):
        return self


@dataclass(frozen=True)
class Parameter:
    """Constant tensor data: weights, biases, statistics, scales, folded constants.

    Immutable: `data` and `mask` are read-only arrays; the verbs replace the whole
    Parameter. `data` is the effective tensor (zero where `mask` is False; equal
    to `encoding.decode()` when encoded).
    """

    data: np.ndarray
    trainable: bool = True
    mask: np.ndarray | None = None  # bool, data.shape: False entries are pruned (and zero in data)
    encoding: Encoding | None = None  # compressed storage that decodes exactly to `data`

    @property
    def sparsity(self) -> float:
        """Fraction of entries the mask prunes (0.0 without a mask)."""
        if self.mask is None or self.mask.size == 0:
            return 0.0
        return 1.0 - float(np.count_nonzero(self.mask)) / self.mask.size


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType | None


class Node:
    """One op application. Fields are read-only; change them through Graph verbs."""

    __slots__ = ("_name", "_op", "_inputs", "_outputs", "_attrs", "meta")

    def __init__(
        self,
        name: str,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        attrs: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        self._name = name
        self._op = op
        self._inputs: tuple[str, ...] = tuple(inputs)
        self._outputs: tuple[str, ...] = tuple(outputs)
        self._attrs = FrozenAttrs(attrs or {})
        self.meta: dict[str, Any] = dict(meta or {})  # provenance: module path, source node

    name = property(lambda self: self._name)
    op = property(lambda self: self._op)
    inputs = property(lambda self: self._inputs)
    outputs = property(lambda self: self._outputs)
    attrs = property(lambda self: self._attrs)

    @property
    def output(self) -> str:
        if len(self._outputs) != 1:
            raise GraphError(f"node '{self._name}' has {len(self._outputs)} outputs")
        return self._outputs[0]

    @property
    def is_opaque(self) -> bool:
        return self._op == OPAQUE

    def __repr__(self) -> str:
        return f"Node({self._name!r}, {self._op!r}, {list(self._inputs)} -> {list(self._outputs)})"


_KEEP: Any = object()  # set_param: keep the parameter's current mask


class Graph:
    def __init__(self, name: str = "graph"):
        self.name = name
        self.metadata: dict[str, Any] = {}  # e.g. {"source": "fx" | "onnx", "opset": 17}
        self._values: dict[str, Value] = {}
        self._params: dict[str, Parameter] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._by_name: dict[str, Node] = {}  # every node; iteration order is not graph order
        self._producer: dict[str, Node] = {}  # value -> the node defining it
        self._users: dict[str, dict[str, Node]] = {}  # value -> {reader name: reader}
        self._key: dict[str, tuple[int, ...]] = {}  # node -> order key (sorted = graph order)
        self._last_key: tuple[int, ...] = (-1,)  # no node has a larger key
        self._seq = itertools.count(1)
        self._suffix: dict[str, int] = {}  # unique_name: next suffix to try per base name
        self._order: tuple[Node, ...] | None = ()  # graph order, None until next computed
        self._disordered = False  # an edit made a reader sort before its producer
        self._version = 0
        self._cache: dict[str, tuple[int, Any]] = {}

    # ---- queries ---------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @property
    def values(self) -> Mapping[str, Value]:
        return MappingProxyType(self._values)

    @property
    def params(self) -> Mapping[str, Parameter]:
        return MappingProxyType(self._params)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self._outputs)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """All nodes in topological order (restored here, once, after edits that broke it)."""
        if self._order is None:
            if self._disordered:
                self._toposort()
            else:
                self._renumber(sorted(self._by_name.values(), key=lambda n: self._key[n.name]))
        return self._order

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise GraphError(f"no node named '{name}' in graph '{self.name}'") from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def value(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise GraphError(f"no value named '{name}' in graph '{self.name}'") from None

    def type_of(self, name: str) -> TensorType:
        t = self.value(name).type
        if t is None:
            raise GraphError(f"value '{name}' has no type")
        return t

    def is_param(self, name: str) -> bool:
        return name in self._params

    def param(self, name: str) -> Parameter:
        try:
            return self._params[name]
        except KeyError:
            raise GraphError(f"'{name}' is not a parameter of graph '{self.name}'") from None

    def cached(self, key: str, build):
        """Memoize `build()` under `key` until the graph is next edited (no stale analyses)."""
        hit = self._cache.get(key)
        if hit is None or hit[0] != self._version:
            hit = (self._version, build())
            self._cache[key] = hit
        return hit[1]

    def producer(self, value: str) -> Node | None:
        """The node defining `value`; None for graph inputs and parameters."""
        return self._producer.get(value)

    def users(self, value: str) -> list[Node]:
        """Nodes reading `value`, in graph order, each once."""
        readers = self._users.get(value)
        if not readers:
            return []
        return sorted(readers.values(), key=lambda n: self._key[n.name])

    def is_used(self, value: str) -> bool:
        return bool(self._users.get(value)) or value in self._outputs

    def position(self, node: Node) -> int:
        """Index of `node` in `graph.nodes`."""
        return self.cached("positions", lambda: {n.name: i for i, n in enumerate(self.nodes)})[node.name]

    def nx(self) -> nx.MultiDiGraph:
        """A networkx view: one vertex per node, an edge per value use (key = value name).

        Graph inputs and parameters are not vertices; analyses read them from
        `graph.inputs` / `graph.params`. The view is rebuilt after every edit.
        """

        def build():
            g = nx.MultiDiGraph()
            for n in self.nodes:
                g.add_node(n.name, op=n.op)
            for n in self.nodes:
                for v in n.inputs:
                    p = self._producer.get(v)
                    if p is not None:
                        g.add_edge(p.name, n.name, key=v)
            return g

        return self.cached("nx", build)

    def unique_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ...: the first not taken by a value or node."""
        base = base or "v"
        if base not in self._values and base not in self._by_name:
            return base
        i = self._suffix.get(base, 1)  # resume where the last search for `base` ended
        while f"{base}_{i}" in self._values or f"{base}_{i}" in self._by_name:
            i += 1
        self._suffix[base] = i + 1
        return f"{base}_{i}"

    # ---- index maintenance (private) ---------------------------------------------
    def _touch(self) -> None:
        self._version += 1

    def _reordered(self) -> None:
        self._order = None
        self._touch()

    def _link(self, node: Node) -> None:
        for v in node.inputs:
            self._users.setdefault(v, {})[node.name] = node

    def _unlink(self, node: Node) -> None:
        for v in node.inputs:
            readers = self._users.get(v)
            if readers is not None:
                readers.pop(node.name, None)
                if not readers:
                    del self._users[v]

    def _key_after(self, inputs: Iterable[str]) -> tuple[int, ...]:
        """An order key placing a new node right after the last producer of `inputs`.

        After the last node overall the key is a fresh integer (builders append);
        elsewhere the producer's key is extended, which sorts between it and its
        successor. Keys are renumbered whenever the order is next computed.
        """
        keys = [self._key[p.name] for v in inputs if (p := self._producer.get(v)) is not None]
        last = max(keys, default=None)
        if last is None:
            key = (-1, -next(self._seq))
        elif last >= self._last_key:
            key = (last[0] + 1,)
        else:
            key = last + (-next(self._seq),)
        self._last_key = max(self._last_key, key)
        return key

    def _renumber(self, order: Sequence[Node]) -> None:
        self._key = {n.name: (i,) for i, n in enumerate(order)}
        self._last_key = (len(order) - 1,)
        self._order = tuple(order)

    def _check_order_of(self, node: Node) -> None:
        """Note when `node` now reads a value produced after it; raise if that closes a cycle."""
        key = self._key[node.name]
        late = {p.name for v in node.inputs if (p := self._producer.get(v)) is not None and self._key[p.name] >= key}
        if not late:
            return
        path = self._path(node.name, late)  # costs only the region downstream of `node`
        if path is not None:
            names = " -> ".join(path)
            raise VerificationError(f"the graph has a cycle: {names} -> {path[0]}", node=node.name)
        self._disordered = True

    def _path(self, start: str, targets: set[str]) -> list[str] | None:
        """A path of nodes from `start` to one of `targets` along value uses, or None."""
        parent: dict[str, str | None] = {start: None}
        stack = [start]
        while stack:
            name = stack.pop()
            if name in targets:
                path = [name]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            for o in self._by_name[name].outputs:
                for r in self._users.get(o, {}):
                    if r not in parent:
                        parent[r] = name
                        stack.append(r)
        return None

    def _new_value(self, name: str, type_: TensorType | None) -> str:
        if name in self._values:
            raise GraphError(f"value '{name}' already exists in graph '{self.name}'")
        self._values[name] = Value(name, type_)
        return name

    # ---- building --------------------------------------------------------------
    def add_input(self, name: str, type_: TensorType) -> str:
        self._new_value(name, type_)
        self._inputs.append(name)
        self._touch()
        return name

    def set_outputs(self, names: Sequence[str]) -> None:
        for n in names:
            self.value(n)
        self._outputs = list(names)
        self._touch()

    def add_param(self, name: str, data: np.ndarray, *, trainable: bool | None = None, unique: bool = True) -> str:
        """Add constant `data` (copied, read-only) as a parameter value; returns its name."""
        if unique:
            name = self.unique_name(name)
        data = frozen_array(data, what=f"parameter '{name}'")
        type_ = _param_type(name, data)
        if trainable is None:
            trainable = np.issubdtype(data.dtype, np.floating)
        self._new_value(name, type_)
        self._params[name] = Parameter(data, trainable=bool(trainable))
        self._touch()
        return name

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        *,
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        outputs: Sequence[str] | None = None,
        output_types: Sequence[TensorType | None] | None = None,
        meta: Mapping[str, Any] | None = None,
        infer: bool = True,
    ) -> Node:
        """Create a node right after the last producer of its inputs and return it.

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
        if len(set(outputs)) != len(outputs) or any(o in self._values for o in outputs):
            taken = [o for o in outputs if o in self._values]
            raise GraphError(f"node '{name}': output names {taken or list(outputs)} are already taken")
        for o, t in zip(outputs, output_types):
            self._new_value(o, t)
            self._producer[o] = node
        self._key[name] = self._key_after(inputs)
        self._by_name[name] = node
        self._link(node)
        self._reordered()
        return node

    def _infer(self, node: Node) -> list[TensorType | None]:
        from graphopt.ir.shape_inference import infer_output_types

        return infer_output_types(self, node)

    # ---- editing verbs -----------------------------------------------------------
    def set_inputs(self, node: Node, inputs: Sequence[str]) -> None:
        """Rewire `node`'s inputs (order is restored lazily if a new input is produced after it)."""
        for v in inputs:
            self.value(v)
        old = node.inputs
        self._unlink(node)
        node._inputs = tuple(inputs)
        self._link(node)
        try:
            self._check_order_of(node)
        except VerificationError:  # nothing changed
            self._unlink(node)
            node._inputs = old
            self._link(node)
            raise
        self._reordered()

    def set_input(self, node: Node, index: int, value: str) -> None:
        ins = list(node.inputs)
        ins[index] = value
        self.set_inputs(node, ins)

    def set_attrs(self, node: Node, **attrs: Any) -> None:
        merged = {**node.attrs, **attrs}
        if node.op != OPAQUE:
            get_op(node.op).with_defaults(merged)
        node._attrs = FrozenAttrs(merged)
        self._touch()

    def rewrite_node(self, node: Node, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None) -> Node:
        """Turn `node` into a different op computing the same output names."""
        attrs = dict(attrs or {})
        if op != OPAQUE:
            attrs = get_op(op).with_defaults(attrs)
        node._op, node._attrs = op, FrozenAttrs(attrs)
        self.set_inputs(node, inputs)
        return node

    def set_type(self, value: str, type_: TensorType | None) -> None:
        """Set a graph input's type (or, for frontends, a value's type they know better)."""
        self.value(value)
        if value in self._params:
            raise GraphError(f"the type of parameter '{value}' follows its data; use set_param")
        self._values[value] = Value(value, type_)
        self._touch()

    def infer_types(self, from_values: Iterable[str] | None = None) -> int:
        """Re-propagate shapes and dtypes forward from `from_values` (every node when None).

        Call once after an edit that changed types (e.g. after slicing the
        parameters of a pruning group). Only nodes downstream of a changed type
        are re-inferred. Returns how many values changed type; raises
        VerificationError naming the node whose op rejects its new input types.
        """
        from graphopt.ir.shape_inference import infer_node_types

        if from_values is None:
            heap = [(self.position(n), n.name) for n in self.nodes]
        else:
            heap = [(self.position(n), n.name) for v in set(from_values) for n in self.users(v)]
        heapq.heapify(heap)
        seen: set[str] = set()
        changed = 0
        while heap:
            _, name = heapq.heappop(heap)
            if name in seen:
                continue
            seen.add(name)
            node = self._by_name[name]
            for o, t in zip(node.outputs, infer_node_types(self, node)):
                if t is None or t == self._values[o].type:
                    continue
                self._values[o] = Value(o, t)
                changed += 1
                for reader in self.users(o):
                    if reader.name not in seen:
                        heapq.heappush(heap, (self.position(reader), reader.name))
        if changed:
            self._touch()
        return changed

    def replace_all_uses(self, old: str, new: str, *, exclude: Iterable[Node] = ()) -> int:
        """Make every reader of `old` (graph outputs included) read `new`; returns the count."""
        self.value(new)
        skip = {n.name for n in exclude}
        count = 0
        for n in list(self._users.get(old, {}).values()):
            if n.name in skip:
                continue
            self.set_inputs(n, [new if v == old else v for v in n.inputs])
            count += 1
        if old in self._outputs:
            self._outputs = [new if v == old else v for v in self._outputs]
            count += 1
        self._touch()
        return count

    def insert_on_edge(
        self,
        value: str,
        op: str,
        *,
        extra_inputs: Sequence[str] = (),
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        readers: Sequence[Node] | None = None,
    ) -> Node:
        """Insert `op(value, *extra_inputs)` between `value` and its readers (all by default)."""
        to_outputs = readers is None and value in self._outputs
        readers = list(self._users.get(value, {}).values()) if readers is None else list(readers)
        node = self.add_node(op, [value, *extra_inputs], attrs=attrs, name=name)
        for r in readers:
            self.set_inputs(r, [node.output if v == value else v for v in r.inputs])
        if to_outputs:
            self._outputs = [node.output if v == value else v for v in self._outputs]
        self._touch()
        return node

    def remove_node(self, node: Node) -> None:
        """Delete `node` and its output values; they must have no readers left."""
        for o in node.outputs:
            if self.is_used(o):
                readers = [n.name for n in self.users(o)] + (["<graph output>"] if o in self._outputs else [])
                raise GraphError(f"cannot remove node '{node.name}': output '{o}' is read by {readers}")
        if self._by_name.get(node.name) is not node:
            raise GraphError(f"node '{node.name}' is not in graph '{self.name}'")
        self._unlink(node)
        del self._by_name[node.name], self._key[node.name]
        for o in node.outputs:
            del self._values[o], self._producer[o]
        self._reordered()

    def bypass_node(self, node: Node, input_index: int = 0) -> None:
        """Remove a single-output node whose output equals input `input_index` (identity-like)."""
        self.replace_all_uses(node.output, node.inputs[input_index])
        self.remove_node(node)

    # ---- parameter verbs ---------------------------------------------------------
    def set_param(
        self, name: str, data: np.ndarray, *, mask: np.ndarray | None = _KEEP, encoding: Encoding | None = None
    ) -> None:
        """Replace a parameter's data; its value type follows.

        The mask is kept (and applied: pruned entries are zeroed) unless `mask` is
        given (None removes it); keeping a mask of another shape is an error.
        The encoding described the old data, so it is dropped unless a new one is
        given (it must decode exactly to `data`).
        """
        p = self.param(name)
        data = frozen_array(data, what=f"parameter '{name}'")
        _param_type(name, data)
        if mask is _KEEP:
            mask = p.mask
            if mask is not None and mask.shape != data.shape:
                raise GraphError(
                    f"parameter '{name}': new data {data.shape} does not fit its mask "
                    f"{mask.shape}; pass mask= (None to drop it)"
                )
        self._store(name, Parameter(data, p.trainable), mask, encoding)

    def set_mask(self, name: str, mask: np.ndarray | None) -> None:
        """Set (or with None remove) a parameter's mask; the entries it prunes become zero in data."""
        p = self.param(name)
        self._store(name, Parameter(p.data, p.trainable), mask, p.encoding)

    def set_encoding(self, name: str, encoding: Encoding | None) -> None:
        """Store the parameter compressed: its data becomes `encoding.decode()` (same shape and dtype)."""
        p = self.param(name)
        data = decoded = p.data
        if encoding is not None:
            _check_encoding(name, encoding)
            data = decoded = frozen_array(_decode(name, encoding), what=f"parameter '{name}'")
            if (data.shape, data.dtype) != (p.data.shape, p.data.dtype):
                raise GraphError(
                    f"parameter '{name}': encoding {encoding.describe()} decodes to "
                    f"{TensorType.of(data)}, the parameter is {TensorType.of(p.data)}"
                )
        self._store(name, Parameter(data, p.trainable), p.mask, encoding, decoded=decoded)

    def set_trainable(self, name: str, trainable: bool) -> None:
        p = self.param(name)
        self._params[name] = Parameter(p.data, bool(trainable), p.mask, p.encoding)
        self._touch()

    def slice_param(self, name: str, axis: int, keep: Sequence[int]) -> bool:
        """Keep only indices `keep` of parameter `name` along `axis`; mask and encoding follow.

        The mask is sliced alike; the encoding is sliced when it supports it
        (`Encoding.take`) and dropped otherwise. Returns False when an encoding
        was dropped, True otherwise. Downstream types are not touched: call
        `infer_types(from_values=[...])` once the whole edit is done.
        """
        p = self.param(name)
        if not -p.data.ndim <= axis < p.data.ndim:
            raise GraphError(f"parameter '{name}' has {p.data.ndim} dims; cannot slice axis {axis}")
        keep = np.asarray(keep, dtype=np.int64)
        if keep.ndim != 1 or (keep.size and (keep.min() < -p.data.shape[axis] or keep.max() >= p.data.shape[axis])):
            raise GraphError(
                f"parameter '{name}': indices to keep must lie in [0, {p.data.shape[axis]}) along axis {axis}"
            )
        data = np.take(p.data, keep, axis=axis)
        mask = None if p.mask is None else np.take(p.mask, keep, axis=axis)
        encoding = None if p.encoding is None else take_encoding(p.encoding, keep, axis)
        self._store(name, Parameter(frozen_array(data), p.trainable), mask, encoding)
        return p.encoding is None or encoding is not None

    def _store(
        self,
        name: str,
        base: Parameter,
        mask: np.ndarray | None,
        encoding: Encoding | None,
        *,
        decoded: np.ndarray | None = None,
    ) -> None:
        """Validate mask and encoding against `base.data`, apply the mask, and commit.

        `decoded`: the encoding's decoding when the caller already has it.
        """
        data = base.data
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != data.shape:
                raise GraphError(
                    f"parameter '{name}': a mask must be bool of shape {data.shape}, got {mask.dtype}{list(mask.shape)}"
                )
            mask = frozen_array(mask, what=f"mask of '{name}'")
            if not mask.all():
                data = frozen_array(np.where(mask, data, np.zeros((), data.dtype)))
        if encoding is not None:
            _check_encoding(name, encoding)
            if decoded is None:
                decoded = _decode(name, encoding)
            if (
                decoded.shape != data.shape
                or decoded.dtype != data.dtype
                or not np.array_equal(decoded, data, equal_nan=np.issubdtype(data.dtype, np.floating))
            ):
                raise GraphError(
                    f"parameter '{name}': encoding {encoding.describe()} does not decode "
                    f"exactly to the parameter's data"
                )
        self._params[name] = Parameter(data, base.trainable, mask, encoding)
        self._values[name] = Value(name, TensorType.of(data))
        self._touch()

    def remove_param(self, name: str) -> None:
        if self.is_used(name):
            raise GraphError(f"cannot remove parameter '{name}': it is still read")
        del self._params[name]
        del self._values[name]
        self._touch()

    # ---- whole-graph edits -----------------------------------------------------------
    def cleanup(self) -> dict[str, int]:
        """Remove nodes, parameters and values that no graph output depends on.

        Never touches graph inputs or outputs. Returns counts of what was removed.
        """
        live: set[str] = set(self._outputs)
        dead_nodes = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                live.update(n.inputs)
            else:
                dead_nodes.append(n)
        for n in dead_nodes:
            self._unlink(n)
            del self._by_name[n.name], self._key[n.name]
            for o in n.outputs:
                del self._values[o], self._producer[o]
        dead_params = [p for p in self._params if p not in live]
        for p in dead_params:
            del self._params[p], self._values[p]
        self._reordered()
        return {"nodes": len(dead_nodes), "params": len(dead_params)}

    def toposort(self) -> None:
        """Restore topological order now; raises VerificationError naming a node on a cycle."""
        self._toposort()
        self._touch()

    def _toposort(self) -> None:
        # Kahn's algorithm, taking ready nodes in order-key order, so the order moves as
        # little as possible; then keys are renumbered (0,), (1,), ...
        pending = {
            name: len({p.name for v in n.inputs if (p := self._producer.get(v)) is not None})
            for name, n in self._by_name.items()
        }
        ready = [(self._key[name], name) for name, k in pending.items() if k == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            _, name = heapq.heappop(ready)
            node = self._by_name[name]
            order.append(node)
            readers = {r.name: r for o in node.outputs for r in self._users.get(o, {}).values()}
            for r in readers:
                pending[r] -= 1
                if pending[r] == 0:
                    heapq.heappush(ready, (self._key[r], r))
        if len(order) != len(self._by_name):
            cycle = nx.find_cycle(self._raw_nx())
            names = " -> ".join(e[0] for e in cycle)
            raise VerificationError(f"the graph has a cycle: {names} -> {cycle[0][0]}", node=cycle[0][0])
        self._renumber(order)
        self._disordered = False

    def _raw_nx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for n in self._by_name.values():
            g.add_node(n.name)
            for v in n.inputs:
                if (p := self._producer.get(v)) is not None:
                    g.add_edge(p.name, n.name)
        return g

    # ---- whole-graph operations ----------------------------------------------------
    def copy(self) -> "Graph":
        """An independent copy. Parameters are immutable, so they are shared, not copied."""
        g = Graph(self.name)
        g.metadata = copy.deepcopy(self.metadata)
        g._values = dict(self._values)
        g._params = dict(self._params)
        g._inputs, g._outputs = list(self._inputs), list(self._outputs)
        for n in self.nodes:
            clone = Node(n.name, n.op, n.inputs, n.outputs, copy.deepcopy(dict(n.attrs)), copy.deepcopy(n.meta))
            g._by_name[n.name] = clone
            for o in clone.outputs:
                g._producer[o] = clone
            g._link(clone)
        g._renumber([g._by_name[n.name] for n in self.nodes])
        return g

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self._by_name.values():
            key = n.op if not n.is_opaque else f"opaque:{n.attrs.get('target') or n.attrs.get('op_type')}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def num_parameters(self) -> int:
        """Elements of the trainable parameters (`analysis.params` counts every parameter and its bytes)."""
        return int(sum(p.data.size for p in self._params.values() if p.trainable))

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
        return (
            f"<Graph {self.name!r}: {len(self._by_name)} nodes, {len(self._params)} params, "
            f"inputs={self._inputs}, outputs={self._outputs}>"
        )

    # ---- emission and execution ------------------------------------------------------
    def to_torch(self, *, impls: Mapping[str, Any] | None = None):
        """A trainable `torch.fx.GraphModule` computing this graph (parameters are nn.Parameters).

        `impls` overrides the torch implementation of canonical ops by name (e.g. a
        straight-through `quantize` for QAT); it gets the op's inputs and attributes.
        """
        from graphopt.emit.torch import emit_torch

        return emit_torch(self, impls=impls)

    def to_onnx(self, opset: int | None = None):
        """An `onnx.ModelProto` that passes the full checker and runs in onnxruntime."""
        from graphopt.emit.onnx import emit_onnx

        return emit_onnx(self, opset=opset)

    def save_onnx(self, path: str | Path, opset: int | None = None) -> Path:
        """Write `to_onnx()` atomically to `path`."""
        from graphopt.emit.onnx import save_onnx

        return save_onnx(self, path, opset=opset)

    def save_compressed(self, path: str | Path, *, entropy: bool = True) -> Path:
        """Write a compressed model file (`graphopt.storage`): masks, encodings, Huffman-coded streams."""
        from graphopt.storage import save_compressed

        return save_compressed(self, path, entropy=entropy)

    def run(self, inputs, *, capture: Sequence[str] | None = None):
        """Execute on inputs (a sequence in `graph.inputs` order, or a name -> array dict).

        Returns the outputs as a list of arrays; with `capture=[value names]`
        returns `(outputs, {name: array})` with those intermediate values too (what
        calibration observers read). Runs through `to_torch()`; a graph holding
        opaque ONNX nodes runs in onnxruntime.
        """
        from graphopt.backends.reference import run_graph

        return run_graph(self, inputs, capture=capture)


def _param_type(name: str, data: np.ndarray) -> TensorType:
    try:
        dtype_from_numpy(data.dtype)
    except ValueError as e:
        raise GraphError(f"parameter '{name}': {e}") from None
    return TensorType.of(data)


def _check_encoding(name: str, encoding: Any) -> None:
    if not isinstance(encoding, Encoding):
        raise GraphError(f"parameter '{name}': {type(encoding).__name__} is not an Encoding (decode, nbytes, describe)")


def _decode(name: str, encoding: Encoding) -> np.ndarray:
    try:
        return np.asarray(encoding.decode())
    except Exception as e:
        raise GraphError(f"parameter '{name}': encoding {type(encoding).__name__} failed to decode: {e}") from None
