"""Content fingerprints of a graph: how the pass manager decides whether a pass changed it.

A fingerprint digests what a graph computes and stores: nodes (by name: op,
inputs, outputs, attributes), value types, graph inputs and outputs, and each
parameter's bytes, mask, encoding and trainable flag. Node order and `meta`
(provenance) are left out: reordering or relabelling provenance changes nothing.
`describe_change` names the first difference for error messages.

Parameters are immutable (read-only arrays, replaced whole by the verbs), so a
parameter's digest is computed once per Parameter object and kept on it: a
pipeline pass costs the bytes of the parameters it replaced, not of the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Parameter


def array_digest(array: np.ndarray) -> str:
    flat = np.ascontiguousarray(array).reshape(-1)
    h = hashlib.blake2b(flat.view(np.uint8).data, digest_size=16)
    return f"{array.dtype.name}{list(array.shape)}:{h.hexdigest()}"


def _canonical(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return array_digest(obj)
    if isinstance(obj, dict):
        return (
            "{" + ",".join(f"{k!r}:{_canonical(v)}" for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + "}"
        )
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__ + "(" + ",".join(_canonical(v) for v in obj) + ")"
    return repr(obj)


def _param_digest(p: "Parameter") -> str:
    cached = p.__dict__.get("_digest")
    if cached is None:
        cached = _digest_param(p)
        object.__setattr__(p, "_digest", cached)  # a cache beside the frozen fields
    return cached


def _digest_param(p: "Parameter") -> str:
    parts = [array_digest(p.data), str(p.trainable)]
    if p.mask is not None:
        parts.append("mask=" + array_digest(p.mask))
    if p.encoding is not None:
        parts.append(f"encoding={type(p.encoding).__name__}:{p.encoding.describe()}:{p.encoding.nbytes}")
    return "|".join(parts)


@dataclass(frozen=True)
class Fingerprint:
    nodes: dict[str, str]
    values: dict[str, str]
    params: dict[str, str]
    boundary: str


def fingerprint(graph: "Graph") -> Fingerprint:
    nodes = {n.name: _canonical((n.op, n.inputs, n.outputs, dict(n.attrs))) for n in graph.nodes}
    values = {name: str(v.type) for name, v in graph.values.items()}
    params = {name: _param_digest(p) for name, p in graph.params.items()}
    return Fingerprint(nodes, values, params, _canonical((graph.inputs, graph.outputs)))


def describe_change(before: Fingerprint, after: Fingerprint) -> str:
    """The first difference, e.g. "parameter 'conv.weight' data" or "node 'relu' was removed"."""
    for kind, a, b in (
        ("parameter", before.params, after.params),
        ("node", before.nodes, after.nodes),
        ("value", before.values, after.values),
    ):
        for name in sorted(a.keys() | b.keys()):
            if name not in b:
                return f"{kind} '{name}' was removed"
            if name not in a:
                return f"{kind} '{name}' was added"
            if a[name] != b[name]:
                return f"{kind} '{name}' changed"
    if before.boundary != after.boundary:
        return "the graph's inputs or outputs changed"
    return "nothing"
