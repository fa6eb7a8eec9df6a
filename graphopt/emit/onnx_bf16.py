"""bfloat16 in emitted ONNX: every op but Cast computes in float32 between casts.

ONNX defines few ops for bfloat16 (Conv, Gemm's relatives and most activations
have no bfloat16 form) and onnxruntime's CPU provider has fewer kernels still
(no Relu, no Conv). So in a model holding bfloat16 values, each node that reads
or writes one reads float32 casts of its bfloat16 inputs and writes float32
results that a Cast rounds back to bfloat16 under the original names. Values
between nodes, initializers and the interface keep their bfloat16 types, and
each op's result is rounded to bfloat16 as `graph.run` rounds it; only the
arithmetic inside an op is float32 (torch computes bfloat16 ops in float32 too).
"""

from __future__ import annotations

import onnx
import onnx.shape_inference
from onnx import TensorProto, helper

from graphopt.errors import EmitError

__all__ = ["compute_bfloat16_in_float32"]

_BF16, _F32 = TensorProto.BFLOAT16, TensorProto.FLOAT


def compute_bfloat16_in_float32(model: onnx.ModelProto, graph_name: str) -> None:
    """Rewrite `model` in place: each non-Cast node touching bfloat16 computes in float32 (see module doc)."""
    types = _elem_types(model)
    if _BF16 not in types.values():
        return
    g = model.graph
    taken = set(types) | {n.name for n in g.node}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        bf16_in = [v for v in node.input if v and types.get(v) == _BF16]
        bf16_out = [v for v in node.output if v and types.get(v) == _BF16]
        if node.op_type == "Cast" and node.domain in ("", "ai.onnx") or not (bf16_in or bf16_out):
            nodes.append(node)
            continue
        untyped = [v for v in node.output if v and v not in types]
        if untyped:
            raise EmitError(
                f"graph '{graph_name}': ONNX node '{node.name}' ({node.op_type}) reads bfloat16 and its output "
                f"'{untyped[0]}' has no inferred type, so it cannot be computed in float32 between casts"
            )
        wide = {}
        for v in dict.fromkeys(bf16_in):
            wide[v] = fresh(f"{v}.f32")
            nodes.append(helper.make_node("Cast", [v], [wide[v]], name=fresh(f"{node.name}.in_f32"), to=_F32))
        rounded = []
        for i, v in enumerate(node.output):
            if v in bf16_out:
                f32 = fresh(f"{v}.f32")
                rounded.append(helper.make_node("Cast", [f32], [v], name=fresh(f"{node.name}.out_bf16"), to=_BF16))
                node.output[i] = f32
        for i, v in enumerate(node.input):
            if v in wide:
                node.input[i] = wide[v]
        nodes += [node, *rounded]
    del g.node[:]
    g.node.extend(nodes)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value ONNX shape inference can type (inputs, initializers, node outputs)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - fall back to the types the emitter declared
        inferred = model.graph
    types = {t.name: t.data_type for t in model.graph.initializer}
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    return types
