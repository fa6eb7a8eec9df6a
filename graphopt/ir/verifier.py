"""Structural verifier: every check names the node (or value) at fault.

Checks, in order: unique names; graph inputs, parameters and outputs are defined;
parameters keep the IR's rule (read-only data, zero where the mask prunes, an
encoding that decodes exactly to the data);
every node input is defined before the node (dangling values, cycles); ops are
known with the right arity and attributes; parameter data matches its value type;
and, for canonical ops on static shapes, recorded output types equal the types
shape inference derives (which also checks parameter shapes against attributes,
e.g. a conv weight against its input channels and groups).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from graphopt.errors import VerificationError
from graphopt.ir.ops import OPAQUE, OPS
from graphopt.ir.types import TensorType

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node


def verify_graph(graph: "Graph", *, check_types: bool = True) -> None:
    _check_definitions(graph)
    _check_order(graph)
    for node in graph.nodes:
        _check_signature(graph, node)
    if check_types:
        for node in graph.nodes:
            _check_types(graph, node)


def _check_definitions(graph: "Graph") -> None:
    seen_nodes: set[str] = set()
    produced: set[str] = set()
    for n in graph.nodes:
        if n.name in seen_nodes:
            raise VerificationError("duplicate node name", node=n.name)
        seen_nodes.add(n.name)
        for o in n.outputs:
            if o in produced or o in graph.params or o in graph.inputs:
                raise VerificationError(f"value '%{o}' is defined more than once", node=n.name)
            produced.add(o)
            if o not in graph.values:
                raise VerificationError(f"output '%{o}' has no value record", node=n.name)
    for i in graph.inputs:
        if i not in graph.values or graph.values[i].type is None:
            raise VerificationError(f"graph input '%{i}' has no type")
        if i in graph.params:
            raise VerificationError(f"graph input '%{i}' is also a parameter")
    for name, p in graph.params.items():
        t = graph.values[name].type if name in graph.values else None
        if t != TensorType.of(p.data):
            raise VerificationError(f"parameter '@{name}' holds {TensorType.of(p.data)} but its value is typed {t}")
        _check_param(name, p)
    defined = produced | set(graph.params) | set(graph.inputs)
    for o in graph.outputs:
        if o not in defined:
            raise VerificationError(f"graph output '%{o}' is not defined by any node, input or parameter")


def _check_param(name: str, p) -> None:
    """The IR's parameter rule: `data` is the effective tensor (mask zeros, exact decode)."""
    if p.data.flags.writeable:
        raise VerificationError(
            f"parameter '@{name}' data is writeable: parameters change only through graph.set_param"
        )
    if p.mask is not None:
        if p.mask.shape != p.data.shape or p.mask.dtype != np.bool_:
            raise VerificationError(
                f"parameter '@{name}' mask is {p.mask.dtype}{list(p.mask.shape)}, expected bool{list(p.data.shape)}"
            )
        if np.any(p.data[~p.mask] != 0):
            raise VerificationError(f"parameter '@{name}' has nonzero entries where its mask prunes")
    if p.encoding is not None:
        decoded = np.asarray(p.encoding.decode())
        if (
            decoded.shape != p.data.shape
            or decoded.dtype != p.data.dtype
            or not np.array_equal(decoded, p.data, equal_nan=decoded.dtype.kind == "f")
        ):
            raise VerificationError(
                f"parameter '@{name}' encoding {p.encoding.describe()} does not decode exactly to its data"
            )


def _check_order(graph: "Graph") -> None:
    defined = set(graph.params) | set(graph.inputs)
    producers = {o: n.name for n in graph.nodes for o in n.outputs}
    for n in graph.nodes:
        for v in n.inputs:
            if v in defined:
                continue
            if v not in producers:
                raise VerificationError(
                    f"input '%{v}' is dangling: not a graph input, parameter or node output", node=n.name
                )
            g = graph.nx()
            if not nx.is_directed_acyclic_graph(g):
                cycle = nx.find_cycle(g)
                path = " -> ".join(e[0] for e in cycle) + f" -> {cycle[0][0]}"
                raise VerificationError(f"the graph has a cycle: {path}", node=cycle[0][0])
            raise VerificationError(
                f"input '%{v}' is used before node '{producers[v]}' defines it (nodes out of topological order)",
                node=n.name,
            )
        defined.update(n.outputs)


def _check_signature(graph: "Graph", node: "Node") -> None:
    if node.op == OPAQUE:
        fw = node.attrs.get("framework")
        if fw not in ("torch", "onnx"):
            raise VerificationError(f"opaque node has framework {fw!r}; expected 'torch' or 'onnx'", node=node.name)
        return
    opdef = OPS.get(node.op)
    if opdef is None:
        raise VerificationError(f"unknown op '{node.op}'", node=node.name)
    n_in = len(node.inputs)
    if n_in < opdef.min_inputs or (opdef.max_inputs is not None and n_in > opdef.max_inputs):
        raise VerificationError(f"{node.op} takes inputs ({', '.join(opdef.inputs)}), got {n_in}", node=node.name)
    try:
        attrs = opdef.with_defaults(node.attrs)
    except ValueError as e:
        raise VerificationError(str(e), node=node.name) from None
    if set(attrs) != set(node.attrs):
        missing = sorted(set(attrs) - set(node.attrs))
        raise VerificationError(f"attributes {missing} are not set (add_node fills defaults)", node=node.name)
    want = opdef.output_count(attrs)
    if len(node.outputs) != want:
        raise VerificationError(f"{node.op} defines {want} outputs, node has {len(node.outputs)}", node=node.name)


def _check_types(graph: "Graph", node: "Node") -> None:
    for o in node.outputs:
        if graph.values[o].type is None:
            raise VerificationError(f"output '%{o}' has no type", node=node.name)
    if node.op == OPAQUE:
        return
    from graphopt.ir.shape_inference import infer_output_types

    inferred = infer_output_types(graph, node)
    for o, t in zip(node.outputs, inferred):
        recorded = graph.values[o].type
        if t is not None and recorded.is_static and t != recorded:
            raise VerificationError(
                f"output '%{o}' is typed {recorded} but {node.op} of its inputs gives {t}", node=node.name
            )
