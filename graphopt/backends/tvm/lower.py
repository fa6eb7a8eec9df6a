"""Lower a graphopt `Graph` to a Relax `IRModule`.

graphopt builds Relax directly from its Graph with `relax.BlockBuilder`, one
lowering rule per canonical op (`lower_ops.RULES`), instead of exporting
to ONNX or torch and importing through TVM's frontends:

- one IR all the way: our own Relax passes (QDQ -> integer conv/matmul, next)
  see quantize/dequantize exactly as the graph wrote them, not as another
  exporter and importer rephrased them;
- an op that cannot be lowered is reported by graphopt's node name and op;
- no second export/import round trip (faster, and nothing to drift);
- parameters become `relax.const`s straight from their numpy arrays.

Opaque nodes are the exception: they lower through TVM's own frontends
(`lower_opaque`: the node alone is exported in its framework, converted, called
in place and inlined). Before anything is emitted every node is checked, and one
error lists every node that neither a rule nor TVM's frontends can lower.

The module has one function, "main", taking the graph inputs in order (static
shapes, or a symbolic dim such as a batch "N" as a shared `tirx.Var`) and
returning the graph output, or a tuple of outputs when there are several.
Every emitted value is checked against the graph's type for it, so a rule
that disagrees with the IR fails at lowering, naming the node.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax, tirx

from graphopt.backends.tvm.lower_opaque import OpaqueCalls, OpaqueLowering, OpaqueRefused, convert_opaque, inline_opaque
from graphopt.backends.tvm.lower_ops import RULES, RuleContext, const
from graphopt.errors import BackendError
from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import TensorType, carrier_dtype

__all__ = ["lower_to_relax", "RULES", "describe_node"]


def describe_node(node: Node) -> str:
    """`node 'x' (op)`, or for an opaque node its original form: `(opaque aten.flip.default)`."""
    if node.is_opaque:
        what = node.attrs.get("target") or node.attrs.get("op_type") or "?"
        return f"node '{node.name}' (opaque {what})"
    return f"node '{node.name}' ({node.op})"


def _name_hint(name: str) -> str:
    hint = re.sub(r"\W", "_", name)
    return hint if hint and not hint[0].isdigit() else f"v_{hint}"


def _input_var(graph: Graph, name: str, symbols: dict[str, tirx.Var]) -> relax.Var:
    """A Relax parameter for graph input `name`; a symbolic dim becomes a tirx.Var shared by every
    input that names the same symbol (`R.Tensor(("N", 3, 224, 224))`)."""
    t = graph.value(name).type
    if t is None:
        raise BackendError(
            f"graph input '{name}' has no known type: the TVM backend needs a shape and dtype for every input"
        )
    dims = [symbols.setdefault(d, tirx.Var(d, "int64")) if isinstance(d, str) else d for d in t.shape]
    return relax.Var(_name_hint(name), relax.TensorType(dims, t.dtype))


def _dim_matches(got, want) -> bool:
    if isinstance(want, str):
        return isinstance(got, tirx.Var) and got.name == want
    return isinstance(got, tirx.IntImm) and int(got) == want


def _check_type(node: Node, value: str, expr: relax.Expr, want: TensorType | None) -> None:
    if want is None or not isinstance(expr.ty, relax.TensorType):
        return
    shape = expr.ty.shape
    got_dims = list(shape.values) if isinstance(shape, relax.ShapeExpr) else None
    got_dtype = str(expr.ty.dtype)
    same_shape = got_dims is not None and len(got_dims) == want.rank and all(map(_dim_matches, got_dims, want.shape))
    if not same_shape or got_dtype != carrier_dtype(want.dtype):
        got = "?" if got_dims is None else "[" + ", ".join(str(d) for d in got_dims) + "]"
        raise BackendError(
            f"{describe_node(node)}: TVM computes {got_dtype}{got} for '{value}' but the graph says {want}"
        )


def _plan_opaque(graph: Graph) -> dict[str, OpaqueLowering]:
    """Converted opaque nodes by name; one BackendError lists every node that cannot be lowered."""
    converted, problems = {}, []
    for node in graph.nodes:
        if node.is_opaque:
            try:
                converted[node.name] = convert_opaque(graph, node)
            except OpaqueRefused as e:
                problems.append(f"{describe_node(node)} cannot be lowered to TVM: {e}")
        elif node.op not in RULES:
            problems.append(f"{describe_node(node)} has no TVM lowering rule")
    if len(problems) == 1:
        raise BackendError(problems[0])
    if problems:
        listed = "\n  ".join(problems)
        raise BackendError(f"{len(problems)} nodes of graph '{graph.name}' cannot be lowered to TVM:\n  {listed}")
    return converted


def _lower_node(
    bb: relax.BlockBuilder,
    graph: Graph,
    node: Node,
    env: dict[str, relax.Expr],
    opaque: dict[str, OpaqueLowering],
    calls: OpaqueCalls,
) -> None:
    try:
        args = [env[v] for v in node.inputs]
        if node.is_opaque:
            out = calls.call(opaque[node.name], node, args)
        else:
            out = RULES[node.op](RuleContext(bb, graph, node), *args, **node.attrs)
        outs = out if isinstance(out, tuple) else (out,)
        if len(outs) != len(node.outputs):
            raise BackendError(f"{describe_node(node)}: rule gave {len(outs)} outputs, node has {len(node.outputs)}")
        for value, expr in zip(node.outputs, outs):
            var = expr if isinstance(expr, relax.Var) else bb.emit(expr, _name_hint(value))
            _check_type(node, value, var, graph.value(value).type)
            env[value] = var
    except BackendError:
        raise
    except Exception as e:  # TVM raises RuntimeError/ValueError/TypeError subclasses
        raise BackendError(f"{describe_node(node)} failed to lower to Relax: {e}") from e


def _param_const(data: np.ndarray) -> relax.Constant:
    # `data` is the effective tensor (masks applied, encodings decoded); int4 rides in int8.
    dt = carrier_dtype(data.dtype.name)
    return const(data.astype(dt) if dt != data.dtype.name else data, dt)


def lower_to_relax(graph: Graph) -> tvm.IRModule:
    """An IRModule whose "main" computes `graph` (inputs in order; parameters as constants).

    Raises BackendError naming the nodes that neither a rule nor TVM's frontends
    lower (all of them, before any work), or a rule that fails; and naming the
    input for an input without a type.
    """
    if not graph.outputs:
        raise BackendError(f"graph '{graph.name}' has no outputs")
    bb = relax.BlockBuilder()
    symbols: dict[str, tirx.Var] = {}
    params = [_input_var(graph, name, symbols) for name in graph.inputs]
    opaque = _plan_opaque(graph)
    calls = OpaqueCalls(bb)
    env: dict[str, relax.Expr] = dict(zip(graph.inputs, params))
    env.update({name: _param_const(p.data) for name, p in graph.params.items()})
    with bb.function("main", params):
        with bb.dataflow():
            for node in graph.nodes:
                _lower_node(bb, graph, node, env, opaque, calls)
            outs = [env[o] for o in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    return inline_opaque(bb.get())
