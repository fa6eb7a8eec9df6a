"""The graph's structure as compact JSON: name, metadata, inputs, outputs, nodes in order.

JSON of the IR itself rather than an ONNX ModelProto without initializers:
restoring it is exact (node and value names, canonical ops and attributes,
provenance, opaque torch nodes that ONNX cannot express), it needs no import
round trip (the ONNX frontend would re-canonicalize and rename), and after
DEFLATE it is a few hundred bytes for a small model. Values `jsonvalues.py`
cannot hold exactly are refused at save time, naming the node and attribute.

A node is `[name, op, inputs, attributes]` plus, only where needed, `{"o": outputs
(when not just [name]), "t": output types (opaque nodes, and types shape inference
would not give back), "m": provenance}`.
"""

from __future__ import annotations

from collections.abc import Callable

from graphopt.errors import GraphoptError, StorageError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.storage.jsonvalues import from_json, to_json


def structure_to_json(graph: Graph) -> dict:
    taken = set(graph.inputs) | set(graph.params)
    nodes = []
    for n in graph.nodes:
        if n.name in taken:
            raise StorageError(
                f"node '{n.name}' has the name of a value defined before it; rename the node to store the graph"
            )
        taken.update(n.outputs)
        taken.add(n.name)
        where = f"node '{n.name}'"
        extra = {}
        if list(n.outputs) != [n.name]:
            extra["o"] = list(n.outputs)
        types = [graph.value(o).type for o in n.outputs]
        if n.is_opaque or _inferred(graph, n) != types:
            extra["t"] = [_type(t) for t in types]
        if n.meta:
            extra["m"] = to_json(dict(n.meta), f"{where} meta")
        entry = [n.name, n.op, list(n.inputs), to_json(dict(n.attrs), f"{where} attribute")]
        nodes.append(entry + [extra] if extra else entry)
    return {
        "name": graph.name,
        "meta": to_json(graph.metadata, "graph metadata"),
        "in": [[i, _type(graph.value(i).type)] for i in graph.inputs],
        "out": list(graph.outputs),
        "nodes": nodes,
    }


def structure_from_json(data: dict, add_params: Callable[[Graph], None]) -> Graph:
    """The graph `data` describes; `add_params(graph)` adds the parameters before the nodes."""
    graph = Graph(data["name"])
    graph.metadata = from_json(data["meta"], "graph metadata")
    for name, t in data["in"]:
        graph.add_input(name, _read_type(t, f"input '{name}'"))
    add_params(graph)
    for entry in data["nodes"]:
        name, op, inputs, attrs = entry[:4]
        extra = entry[4] if len(entry) > 4 else {}
        where = f"node '{name}'"
        try:
            node = graph.add_node(
                op,
                inputs,
                attrs=from_json(attrs, f"{where} attribute"),
                name=name,
                outputs=extra.get("o", [name]),
                output_types=[_read_type(t, where) for t in extra["t"]] if "t" in extra else None,
                meta=from_json(extra["m"], f"{where} meta") if "m" in extra else None,
            )
        except StorageError:
            raise
        except (GraphoptError, KeyError, ValueError, TypeError) as e:
            raise StorageError(f"{where} ({op}) cannot be restored: {e}") from None
        if node.name != name:
            raise StorageError(f"{where}: restored under the name '{node.name}' (the file is corrupt)")
    try:
        graph.set_outputs(data["out"])
        graph.verify()
    except GraphoptError as e:
        raise StorageError(f"the stored graph does not verify: {e}") from None
    return graph


def _inferred(graph: Graph, node) -> list[TensorType | None] | None:
    """The types shape inference gives `node`'s outputs (what loading recomputes), None if it fails."""
    from graphopt.ir.shape_inference import infer_output_types

    try:
        return list(infer_output_types(graph, node))
    except Exception:  # the stored types are kept instead
        return None


def _type(t: TensorType | None):
    return None if t is None else [list(t.shape), t.dtype]


def _read_type(t, where: str) -> TensorType | None:
    if t is None:
        return None
    try:
        return TensorType(tuple(t[0]), t[1])
    except (ValueError, TypeError, IndexError) as e:
        raise StorageError(f"{where}: malformed type {t!r} ({e})") from None
