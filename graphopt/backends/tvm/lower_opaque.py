"""Opaque nodes lowered through TVM's own frontends.

An opaque node keeps the form it was imported in (an ATen target with its
argument template, or an ONNX op_type with its attributes). Here that node
alone becomes a one-node graph, which graphopt's own emitters write back in its
framework, and TVM's frontend for that framework turns it into a Relax function:

- torch: `emit_torch` of the one-node graph, `torch.export.export` on inputs of
  the node's types, then `from_exported_program`, first with the op as written
  (TVM's converter for it, a high-level Relax op) and then decomposed by torch
  into core ATen (TVM's default), whichever converts first. Parameter inputs
  are arguments, so one conversion serves every node of the same form; the
  lowering passes them the constants it binds for all parameters.
- ONNX: `emit_onnx` of the one-node graph (the source opset), then `from_onnx`.
  Parameter inputs are initializers of that model (bound constants), because
  ONNX ops take shapes, scales, pads and counts as tensors that TVM's
  converters read at conversion time.

`convert_opaque` returns the converted `IRModule` ("main" plus any PrimFuncs the
frontend emitted) and which node inputs "main" takes; conversions are cached by
form, attributes, input types and embedded constants, so repeated opaque nodes
convert once. `OpaqueCalls` adds each conversion once to the module being built
and calls it in place; `inline_opaque` then inlines those private functions
(TVM's `InlinePrivateFunctions`), so later passes see one flat "main".
When neither form converts, `OpaqueRefused` says why (naming the frontend).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import tvm
from tvm import relax

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import OPAQUE, ValueRef
from graphopt.ir.types import TensorType, carrier_dtype, torch_dtype

__all__ = ["OpaqueLowering", "OpaqueRefused", "OpaqueCalls", "convert_opaque", "inline_opaque", "CACHE_SIZE"]

CACHE_SIZE = 256  # conversions kept (least recently used dropped first)


class OpaqueRefused(Exception):
    """Why an opaque node cannot be lowered (the text completes "cannot be lowered to TVM: ...")."""


@dataclass(frozen=True)
class OpaqueLowering:
    """A converted opaque node: `module["main"]` takes the node inputs at positions `args`.

    `args` names each distinct input once (first position); the others are embedded constants.
    """

    module: tvm.IRModule
    args: tuple[int, ...]
    key: tuple


def convert_opaque(graph: Graph, node: Node) -> OpaqueLowering:
    """The Relax form of opaque `node` from TVM's frontend for its framework (cached).

    Raises OpaqueRefused saying why when the node cannot be converted.
    """
    framework = node.attrs.get("framework")
    if framework not in _CONVERTERS:
        raise OpaqueRefused(f"TVM has no frontend for opaque {framework!r} nodes")
    types = [graph.value(v).type for v in node.inputs] + [graph.value(v).type for v in node.outputs]
    if any(t is None or not t.is_static for t in types):
        raise OpaqueRefused("TVM's frontends need static shapes and dtypes for its inputs and outputs")
    embedded = [v for v in dict.fromkeys(node.inputs) if framework == "onnx" and graph.is_param(v)]
    args = tuple(i for i, v in enumerate(node.inputs) if v not in embedded and v not in node.inputs[:i])
    key = (framework, _freeze(dict(node.attrs)), tuple(types), tuple(_freeze(graph.params[v].data) for v in embedded))
    cached = _CACHE.get(key)
    if cached is None:
        try:
            cached = _CONVERTERS[framework](_one_node_graph(graph, node, args), node)
        except OpaqueRefused as e:
            cached = e
        _remember(key, cached)
    if isinstance(cached, OpaqueRefused):
        raise cached
    return OpaqueLowering(cached, args, key)


class OpaqueCalls:
    """Adds converted opaque nodes to the module `bb` builds (each form once) and calls them."""

    def __init__(self, bb: relax.BlockBuilder):
        self.bb = bb
        self._added: dict[tuple, relax.GlobalVar] = {}

    def call(self, lowering: OpaqueLowering, node: Node, inputs: list[relax.Expr]) -> tuple[relax.Expr, ...]:
        """The node's outputs, computed by a call to its converted function."""
        gv = self._added.get(lowering.key)
        if gv is None:
            gv = self._added[lowering.key] = self._add(lowering.module, f"opaque_{len(self._added)}")
        out = self.bb.emit(relax.Call(gv, [inputs[i] for i in lowering.args]))
        if not isinstance(out.ty, relax.TupleType):
            return (out,)
        return tuple(relax.TupleGetItem(out, i) for i in range(len(node.outputs)))

    def _add(self, module: tvm.IRModule, prefix: str) -> relax.GlobalVar:
        renamed: dict[relax.GlobalVar, relax.GlobalVar] = {}
        for gv, func in module.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc):
                renamed[gv] = self.bb.add_func(func.without_attr("global_symbol"), f"{prefix}_{gv.name_hint}")
        main = _GlobalRenamer(renamed).visit_expr(module["main"]) if renamed else module["main"]
        return self.bb.add_func(main.without_attr("global_symbol"), prefix)


def inline_opaque(mod: tvm.IRModule) -> tvm.IRModule:
    """Inline the private functions `OpaqueCalls` added (no-op when there are none)."""
    if all(f.attrs is not None and "global_symbol" in f.attrs for f in mod.functions.values()):
        return mod
    return relax.transform.InlinePrivateFunctions()(mod)


@relax.expr_functor.mutator
class _GlobalRenamer(relax.PyExprMutator):
    """Points calls of a converted module's PrimFuncs at their copies in the module being built."""

    def __init__(self, renamed: dict):
        super().__init__()
        self.renamed = renamed

    def visit_global_var_(self, op: relax.GlobalVar) -> relax.Expr:
        return self.renamed.get(op, op)


# --- one-node graphs -----------------------------------------------------------------------------


def _one_node_graph(graph: Graph, node: Node, args: tuple[int, ...]) -> Graph:
    """`node` alone: inputs at `args` are graph inputs (in that order), the others parameters."""
    one = Graph(f"{graph.name}_{node.name}")
    one.metadata.update({k: graph.metadata[k] for k in ("source", "opset", "opset_imports") if k in graph.metadata})
    for i in args:
        one.add_input(node.inputs[i], graph.type_of(node.inputs[i]))
    for v in node.inputs:
        if v not in one.values:
            one.add_param(v, graph.params[v].data, trainable=False, unique=False)
    n = one.add_node(
        OPAQUE,
        node.inputs,
        attrs=dict(node.attrs),
        name=node.name,
        outputs=node.outputs,
        output_types=[graph.type_of(v) for v in node.outputs],
    )
    one.set_outputs(n.outputs)
    return one


def _from_torch(one: Graph, node: Node) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_exported_program

    from graphopt.emit.torch import emit_torch

    try:
        module = emit_torch(one)
        examples = tuple(torch.zeros(t.shape, dtype=torch_dtype(t.dtype)) for t in map(one.type_of, one.inputs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, examples)
    except Exception as e:  # emit and export raise many types; the first line says what failed
        raise OpaqueRefused(f"torch cannot export it on inputs of its types ({_first_line(e)})") from None
    errors = []
    for decompose in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = from_exported_program(program, run_ep_decomposition=decompose)
            _check_result(mod, one)
            return mod
        except Exception as e:  # converters raise any type; the message says what failed
            errors.append(_first_line(e))
    raise OpaqueRefused(f"TVM's torch frontend has no converter for it ({errors[-1]})")


def _from_onnx(one: Graph, node: Node) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    from graphopt.emit.onnx import emit_onnx

    try:
        model = emit_onnx(one)
    except GraphoptError as e:
        raise OpaqueRefused(f"it cannot be written as a one-node ONNX model ({_first_line(e)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = from_onnx(model, opset=model.opset_import[0].version, keep_params_in_input=False)
        _check_result(mod, one)
        return mod
    except Exception as e:  # converters raise any type; the message says what failed
        raise OpaqueRefused(f"TVM's ONNX frontend has no converter for it ({_first_line(e)})") from None


_CONVERTERS: dict[str, Callable[[Graph, Node], tvm.IRModule]] = {"torch": _from_torch, "onnx": _from_onnx}


def _check_result(mod: tvm.IRModule, one: Graph) -> None:
    """The converted main takes the one-node graph's inputs, returns its outputs' types and legalizes.

    Legalizing here (a tiny module) catches a converter whose Relax op TVM cannot
    lower, so the next form is tried instead of the build failing later.
    """
    relax.transform.LegalizeOps()(mod)
    ret = mod["main"].ret_ty
    got = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    want = [one.type_of(o) for o in one.outputs]
    if len(got) != len(want) or len(mod["main"].params) != len(one.inputs):
        raise ValueError(f"TVM's function has {len(got)} outputs and {len(mod['main'].params)} inputs")
    for g, w in zip(got, want):
        if not isinstance(g, relax.TensorType) or g.shape is None:
            raise ValueError(f"TVM computes {g} where the graph says {w}")
        shape = [int(d) for d in g.shape.values]
        if shape != list(w.shape) or str(g.dtype) != carrier_dtype(w.dtype):
            raise ValueError(f"TVM computes {g.dtype}{shape} where the graph says {w}")


# --- the cache ------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, tvm.IRModule | OpaqueRefused] = OrderedDict()


def _remember(key: tuple, value) -> None:
    _CACHE[key] = value
    _CACHE.move_to_end(key)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)


def _freeze(v: Any) -> Any:
    """A hashable stand-in for an attribute value (arrays and protos by content)."""
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())
    if isinstance(v, dict):
        return ("dict", tuple((k, _freeze(x)) for k, x in sorted(v.items())))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, ValueRef):
        return ("ref", v.index)
    if hasattr(v, "SerializeToString"):  # ONNX subgraphs and tensors
        return ("proto", hashlib.sha256(v.SerializeToString()).hexdigest())
    if isinstance(v, (str, int, float, bool, type(None), TensorType)):
        return (type(v).__name__, v)  # 1, 1.0 and True are equal keys otherwise
    return (type(v).__name__, repr(v))  # torch.dtype, torch.device, numpy scalars


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__
