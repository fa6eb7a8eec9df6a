"""ONNX emitter: Graph -> onnx.ModelProto that passes the full checker and runs in onnxruntime.

Canonical ops go through the rule table in `graphopt.emit.onnx_ops`; parameters
become initializers under their own names (masked entries zeroed); value types
become graph input/output types and value_info (symbolic dims as dim_param).
Opaque ONNX nodes are emitted back as they came (see `graphopt.frontends.onnx`
for their attributes); opaque torch nodes cannot be, and raise `EmitError`.

Opset: `DEFAULT_OPSET` unless asked, or the source model's opset when the graph
holds opaque default-domain nodes (their definitions belong to it). An opaque
op whose definition differs between its source opset and the target is refused.
bfloat16 ops compute in float32 between casts (`graphopt.emit.onnx_bf16`).
Models of 2 GB or more (ONNX external data) are out of scope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.shape_inference
from onnx import helper, numpy_helper

import graphopt
from graphopt.emit.onnx_bf16 import compute_bfloat16_in_float32
from graphopt.emit.onnx_ops import RULES, EmitContext, elem_type
from graphopt.errors import EmitError
from graphopt.fileio import atomic_write_bytes
from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import TensorType

__all__ = ["emit_onnx", "save_onnx", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]

DEFAULT_OPSET = 17  # LayerNormalization; supported by every onnxruntime we target
MIN_OPSET = 13  # Split/Squeeze/ReduceSum take their axes/sizes as inputs from 13
MAX_OPSET = 23
_PROTO_LIMIT = 2**31  # protobuf's hard limit on one serialized message


def emit_onnx(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """The ONNX form of `graph`; raises EmitError naming the node that cannot be emitted."""
    opset = _choose_opset(graph, opset)
    size = sum(p.data.nbytes for p in graph.params.values())
    if size >= _PROTO_LIMIT - (64 << 20):
        raise EmitError(
            f"graph '{graph.name}': parameters take {size / 2**30:.2f} GiB; models of 2 GB "
            f"or more need ONNX external data, which emit_onnx does not write"
        )
    cx = EmitContext(graph, opset)
    domains: dict[str, int] = {}
    for node in graph.nodes:
        if node.is_opaque:
            _emit_opaque(cx, node, domains)
            continue
        rule = RULES.get(node.op)
        if rule is None:
            raise EmitError(f"node '{node.name}': op '{node.op}' has no ONNX form")
        rule(cx, node)
    initializers = [_initializer(name, p) for name, p in graph.params.items()] + cx.initializers
    inputs = [_value_info(graph, v) for v in graph.inputs]
    outputs = [_value_info(graph, v) for v in graph.outputs]
    boundary = set(graph.inputs) | set(graph.outputs) | set(graph.params)
    value_info = [
        _value_info(graph, v) for v, val in graph.values.items() if v not in boundary and val.type is not None
    ]
    gproto = helper.make_graph(cx.nodes, graph.name, inputs, outputs, initializers, value_info=value_info)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in sorted(domains.items())]
    model = helper.make_model(
        gproto, opset_imports=opsets, producer_name="graphopt", producer_version=graphopt.__version__
    )
    model.ir_version = max(7, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
    compute_bfloat16_in_float32(model, graph.name)  # ONNX and onnxruntime lack most bfloat16 kernels
    _type_outputs(graph, model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise EmitError(f"graph '{graph.name}': the emitted ONNX model fails the checker: {e}") from None
    return model


def save_onnx(graph: Graph, path: str | Path, opset: int | None = None) -> Path:
    """Write `emit_onnx(graph)` to `path` atomically: a failure leaves any old file untouched."""
    data = emit_onnx(graph, opset).SerializeToString()
    return atomic_write_bytes(path, data)


# --- pieces ------------------------------------------------------------------------------


def _choose_opset(graph: Graph, opset: int | None) -> int:
    if opset is None:
        source = graph.metadata.get("opset") if graph.metadata.get("source") == "onnx" else None
        keeps_source = any(
            n.is_opaque and n.attrs.get("framework") == "onnx" and n.attrs.get("domain") in ("", "ai.onnx")
            for n in graph.nodes
        )
        opset = source if keeps_source and source and MIN_OPSET <= source <= MAX_OPSET else DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EmitError(f"graph '{graph.name}': opset {opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")
    return opset


def _initializer(name: str, p) -> onnx.TensorProto:
    # `data` is the effective tensor: masked entries are already zero.
    return numpy_helper.from_array(np.require(p.data, requirements="C"), name)  # keeps 0-d shapes


def _value_info(graph: Graph, name: str) -> onnx.ValueInfoProto:
    t: TensorType | None = graph.values[name].type
    if t is None:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, elem_type(t.dtype), list(t.shape))


def _type_outputs(graph: Graph, model: onnx.ModelProto) -> None:
    """Graph outputs must be typed: ONNX shape inference supplies what the IR does not know."""
    untyped = [o for o in model.graph.output if not o.type.HasField("tensor_type")]
    if not untyped:
        return
    try:
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
    except Exception:
        inferred = {}
    for o in untyped:
        t = inferred.get(o.name)
        if t is None or not t.type.HasField("tensor_type") or not t.type.tensor_type.elem_type:
            raise EmitError(f"graph '{graph.name}': output '%{o.name}' has no type; ONNX graph outputs need one")
        o.type.CopyFrom(t.type)


def _emit_opaque(cx: EmitContext, node: Node, domains: dict[str, int]) -> None:
    a = node.attrs
    if a.get("framework") != "onnx":
        target = a.get("target", "?")
        raise EmitError(f"node '{node.name}': opaque {a.get('framework')} op '{target}' cannot be emitted to ONNX")
    op_type, domain = a["op_type"], a.get("domain") or ""
    if domain in ("", "ai.onnx"):
        _check_opaque_opset(cx.graph, node, op_type, cx.opset)
    else:
        domains[domain] = int(cx.graph.metadata.get("opset_imports", {}).get(domain, 1))
    captured = list(a.get("onnx_captures", ()))
    n_explicit = len(node.inputs) - len(captured)
    for current, original in zip(node.inputs[n_explicit:], captured):
        if current != original:  # a pass renamed a value the subgraph reads by its old name
            if original in cx.graph.values:
                raise EmitError(f"node '{node.name}': its subgraph reads '{original}', now renamed '{current}'")
            cx.add(node, "Identity", [current], [original])
    inputs = list(node.inputs[:n_explicit])
    for slot in a.get("onnx_missing_inputs", ()):
        inputs.insert(slot, "")
    outputs = list(node.outputs)
    for slot in a.get("onnx_missing_outputs", ()):
        if not cx.graph.is_used(outputs[slot]):
            outputs[slot] = ""
    schema = _schema(op_type, domain, cx.opset)
    proto = helper.make_node(op_type, inputs, outputs, name=node.name, domain=domain or None)
    for key, value in a.get("onnx_attrs", {}).items():
        proto.attribute.append(_attribute(key, value, schema, node))
    cx.append(proto)


def _schema(op_type: str, domain: str, opset: int):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except Exception:
        return None


def _check_opaque_opset(graph: Graph, node: Node, op_type: str, opset: int) -> None:
    source = graph.metadata.get("opset")
    if not source or source == opset:
        return
    old, new = _schema(op_type, "", source), _schema(op_type, "", opset)
    if old is not None and new is not None and old.since_version != new.since_version:
        raise EmitError(
            f"node '{node.name}': opaque ONNX op {op_type} comes from opset {source} and its "
            f"definition changed by opset {opset}; emit with opset={source}"
        )


_ATTR = onnx.AttributeProto


def _attribute(key: str, value: Any, schema, node: Node) -> onnx.AttributeProto:
    """An opaque node's attribute back as ONNX, typed by the op schema where there is one."""
    want = schema.attributes[key].type if schema is not None and key in schema.attributes else None
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, (np.integer, np.floating)):
        value = value.item()
    elif isinstance(value, (list, tuple)):
        value = [
            numpy_helper.from_array(v)
            if isinstance(v, np.ndarray)
            else v.item()
            if isinstance(v, (np.integer, np.floating))
            else v
            for v in value
        ]
    if want == _ATTR.FLOAT and isinstance(value, (int, bool)):
        value = float(value)
    elif want == _ATTR.FLOATS and isinstance(value, list):
        value = [float(v) for v in value]
    elif want == _ATTR.INT and isinstance(value, bool):
        value = int(value)
    try:
        if isinstance(value, list) and not value:
            return helper.make_attribute(key, value, attr_type=want or _ATTR.INTS)
        return helper.make_attribute(key, value)
    except Exception as e:
        raise EmitError(
            f"node '{node.name}': attribute '{key}' of {node.attrs.get('op_type')} cannot be written to ONNX: {e}"
        ) from None
