"""`extract(graph, keep)`: the subgraph of the nodes named in `keep`, cut out as a model of its own.

Values a kept node reads that no kept node produces become graph inputs (parameters
stay parameters, with their masks and encodings); values kept nodes produce that no
kept node reads become graph outputs, as do the original outputs still produced.
The model it came from is not touched. This is how Polygraphy's `debug reduce`
cuts a model: marking intermediate tensors as inputs and outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph

__all__ = ["extract"]


def extract(graph: Graph, keep: Collection[str]) -> Graph | None:
    """The subgraph of `keep` (node names); None when it cannot stand alone (a cut value has no type)."""
    nodes = [n for n in graph.nodes if n.name in keep]
    if not nodes:
        return None
    produced = {o for n in nodes for o in n.outputs}
    read = {v for n in nodes for v in n.inputs}
    sub = Graph(graph.name)
    sub.metadata = copy.deepcopy(graph.metadata)
    for n in nodes:
        for v in n.inputs:
            if v in produced or v in sub.values:
                continue
            if graph.is_param(v):
                p = graph.param(v)
                sub.add_param(v, p.data, trainable=p.trainable, unique=False)
                if p.mask is not None:
                    sub.set_mask(v, p.mask)
                if p.encoding is not None:
                    sub.set_encoding(v, p.encoding)
            elif graph.values[v].type is None:
                return None
            else:
                sub.add_input(v, graph.values[v].type)
    try:
        for n in nodes:
            sub.add_node(
                n.op,
                n.inputs,
                attrs=copy.deepcopy(dict(n.attrs)),
                name=n.name,
                outputs=n.outputs,
                output_types=[graph.values[o].type for o in n.outputs],
                meta=copy.deepcopy(n.meta),
            )
        outputs = [o for n in nodes for o in n.outputs if o not in read or o in graph.outputs]
        sub.set_outputs(outputs)
        sub.verify(check_types=all(sub.values[o].type is not None for o in outputs))
    except GraphoptError:
        return None
    return sub
