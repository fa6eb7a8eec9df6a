"""torch frontend: `trace(model, example_inputs)` → Graph, through `torch.export`.

The model is exported in eval mode, with static shapes unless `input_shapes`/`dynamic_batch`
name a symbol (a `torch.export.Dim`, kept in the graph); the caller's model is not
changed (its `training` flags are restored, its tensors are only read). ATen ops
of the exported program map onto canonical ops by the rule table in
`graphopt.frontends.fx_ops`; anything else becomes an opaque node that keeps its
`OpOverload` and argument template, so import never fails on an unknown op.

- Parameters, buffers and lifted tensor constants become graph parameters under
  their state-dict names (`layer1.0.conv1.weight`); `nn.Parameter`s are trainable,
  buffers and constants are not. Python scalars in arithmetic become 0-d frozen
  parameters (`mul_scalar`).
- Graph inputs are the tensor positional inputs, named after `forward`'s
  arguments; graph outputs are the model's tensor outputs, flattened in pytree order.
- Nodes carry `meta["module"]`, the qualified name of the innermost module that
  produced them, when export records one.
- In-place ops (`relu_`, `+=`) are read as their functional forms when no one can
  observe the mutation; otherwise the program is functionalized first with
  `run_decompositions({})`. Mutations of inputs and buffers are not part of the graph.
- Every canonical node's output type is checked against the type export recorded.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import Node as FxNode

from graphopt.errors import FrontendError, GraphError, VerificationError
from graphopt.frontends.fx_ops import IGNORED, RULES
from graphopt.ir.graph import Graph
from graphopt.ir.ops import OPAQUE, ValueRef
from graphopt.ir.types import TensorType, dtype_from_torch

__all__ = ["trace", "import_exported"]


def trace(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    *,
    name: str | None = None,
    input_shapes=None,
    dynamic_batch: bool = False,
) -> Graph:
    """Export `model` on `example_inputs` (eval mode) and import it as a Graph.

    Shapes are the examples' unless `input_shapes` ({"x": ("N", 3, 224, 224)}, by forward's argument
    names) or `dynamic_batch` make a dim symbolic: torch.export then traces it as a `Dim` and the graph
    keeps the symbol (`graphopt.shapes`).
    A model left in training mode is traced in eval mode with a UserWarning saying so; the
    model's `training` flags are restored. Raises FrontendError naming the model class when
    torch.export cannot trace it.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    _warn_if_training(model)
    dynamic = None
    if input_shapes or dynamic_batch:
        from graphopt.shapes import torch_dynamic_shapes

        names = _argument_names(model, len(example_inputs))
        dynamic = torch_dynamic_shapes(names, [tuple(x.shape) for x in example_inputs], input_shapes, dynamic_batch)
        example_inputs = _widen_unit_axes(example_inputs, dynamic)
    ep = _export(model, tuple(example_inputs), dynamic)
    return import_exported(ep, name=name or type(model).__name__, symbols=_symbol_names(ep, dynamic))


def _widen_unit_axes(examples, dynamic) -> tuple:
    """torch.export specializes a size-1 axis to 1 even when it is a Dim: such an example is repeated to size 2
    along that axis (only shapes are traced, so its values do not matter)."""
    if not dynamic:
        return tuple(examples)
    widened = []
    for x, axes in zip(examples, dynamic):
        for axis in axes or {}:
            if isinstance(x, torch.Tensor) and x.shape[axis] == 1:
                x = torch.cat([x, x], dim=axis)
        widened.append(x)
    return (*widened, *examples[len(widened) :])


def _argument_names(model: nn.Module, count: int) -> list[str]:
    import inspect

    params = [p.name for p in inspect.signature(model.forward).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    return (params + [f"input{i}" for i in range(len(params), count)])[:count]


def _symbol_names(ep: ExportedProgram, dynamic) -> dict[str, str]:
    """torch's symbol for each dynamic input axis -> the Dim's name."""
    if not dynamic:
        return {}
    users = [s for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    names = {}
    for spec, axes in zip(users, dynamic):
        val = placeholders[spec.arg.name].meta.get("val")
        for axis, dim in (axes or {}).items():
            size = val.shape[axis] if isinstance(val, torch.Tensor) else None
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                names[str(size.node.expr)] = dim.__name__
    return names


def _warn_if_training(model: nn.Module) -> None:
    training = [name or "the model" for name, m in model.named_modules() if m.training]
    if training:
        warnings.warn(
            f"{type(model).__name__} is in training mode ({training[0]}.training is True): it is traced and "
            "compiled in eval mode (Dropout off, BatchNorm on its running statistics), so its outputs differ "
            "from calls in training mode; call model.eval() first to silence this (the model is left as it is)",
            UserWarning,
            stacklevel=3,
        )


def _export(model: nn.Module, example_inputs: tuple, dynamic_shapes=None) -> ExportedProgram:
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    except Exception as e:  # export raises many types; the first line says what went wrong
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = lines[0] if lines else type(e).__name__
        raise FrontendError(f"torch.export cannot trace {type(model).__name__}: {first}") from e
    finally:
        for m, training in flags:
            m.training = training


def import_exported(ep: ExportedProgram, *, name: str = "graph", symbols: dict[str, str] | None = None) -> Graph:
    """Import an already exported program (see `trace`); `symbols` renames torch's size symbols."""
    order = {n: i for i, n in enumerate(ep.graph.nodes)}
    if not all(_mutation_is_local(n, order) for n in ep.graph.nodes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ep = ep.run_decompositions({})
    graph = Graph(name)
    graph.metadata["source"] = "fx"
    _Importer(ep, graph, symbols).run()
    return graph


# --- in-place ops -------------------------------------------------------------------


def _schema(node: FxNode):
    return node.target._schema if isinstance(node.target, torch._ops.OpOverload) else None


def _is_inplace(node: FxNode) -> bool:
    s = _schema(node)
    return s is not None and s.is_mutable


def _is_view(node: FxNode) -> bool:
    s = _schema(node)
    if node.target is operator.getitem:
        return _is_view(node.args[0])
    return s is not None and not s.is_mutable and any(r.alias_info is not None for r in s.returns)


def _mutation_is_local(node: FxNode, order: dict[FxNode, int]) -> bool:
    """True unless `node` mutates a tensor that something can observe afterwards.

    Safe: only the first argument is written, it is a fresh intermediate (not an
    input, parameter or view), and nothing reads it (or what it aliases) later.
    """
    if node.op != "call_function" or not _is_inplace(node):
        return True
    s = _schema(node)
    written = [i for i, a in enumerate(s.arguments) if a.alias_info is not None and a.alias_info.is_write]
    if written != [0] or not isinstance(node.args[0], FxNode):
        return False
    group, cur = [], node.args[0]
    while True:
        group.append(cur)
        if cur.op != "call_function" or _is_view(cur):
            return False
        if not _is_inplace(cur):
            break
        cur = cur.args[0]
    return all(order[u] <= order[node] for g in group for u in g.users if u is not node)


def _functional(op: torch._ops.OpOverload):
    """`aten.relu_.default` -> `aten.relu.default` (None when there is none)."""
    ns, _, base = op._schema.name.partition("::")
    if ns != "aten" or not base.endswith("_"):
        return None
    packet = getattr(torch.ops.aten, base.rstrip("_"), None)
    return getattr(packet, op._overloadname, None) if packet is not None else None


# --- the importer ------------------------------------------------------------------------


def _bind(node: FxNode) -> dict[str, Any]:
    """Arguments of an ATen call by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, arg in enumerate(_schema(node).arguments):
        if not arg.kwarg_only and i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        else:
            out[arg.name] = arg.default_value if arg.has_default_value() else None
    return out


def _used_outputs(node: FxNode) -> set[int]:
    """Indices `getitem` reads from a multi-output node and then uses."""
    return {u.args[1] for u in node.users if u.target is operator.getitem and u.users}


def _tensor_type(val, symbols: dict[str, str] | None = None) -> TensorType | None:
    """The IR type of a fake tensor; a symbolic size is named by `symbols` (torch's s0 -> the user's N),
    and a size that is an expression of symbols (s0*64) makes the type unknown."""
    if not isinstance(val, torch.Tensor):
        return None
    dims = []
    for d in val.shape:
        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            if not expr.is_Symbol:
                return None
            dims.append((symbols or {}).get(str(expr), str(expr)))
        else:
            dims.append(int(d))
    return TensorType(tuple(dims), dtype_from_torch(val.dtype))


def _numpy(t: torch.Tensor, what: str) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise FrontendError(f"{what} is bfloat16, which graph parameters (numpy) cannot hold")
    return t.detach().cpu().contiguous().numpy().copy()


class _Importer:
    """Walks the exported fx graph once, filling `graph`; fx_ops rules call back into it."""

    def __init__(self, ep: ExportedProgram, graph: Graph, symbols: dict[str, str] | None = None):
        self.ep, self.graph = ep, graph
        self.symbols = symbols or {}  # torch's symbol names (s0) -> the names the user gave (N)
        self.env: dict[FxNode, Any] = {}  # fx node -> value name, or list for multi-output
        self.node: FxNode | None = None  # the fx node being converted

    def run(self) -> None:
        specs = iter(self.ep.graph_signature.input_specs)
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = self._placeholder(node, next(specs))
            elif node.op == "call_function":
                self.node = node
                self.env[node] = self._call(node)
            elif node.op == "output":
                self._outputs(node)
            else:
                raise FrontendError(f"node '{node.name}': cannot import fx '{node.op}' node {node.target}")
        self._drop_dead_nodes()

    # -- inputs, parameters, outputs
    def _placeholder(self, node: FxNode, spec) -> str | None:
        g, target = self.graph, spec.target
        if spec.kind == InputKind.USER_INPUT:
            t = _tensor_type(node.meta.get("val"), self.symbols)
            return g.add_input(g.unique_name(node.name), t) if t is not None else None
        if spec.kind == InputKind.PARAMETER:
            data, trainable = self.ep.state_dict[target], True
        elif spec.kind == InputKind.BUFFER:
            data = self.ep.state_dict[target] if spec.persistent else self.ep.constants[target]
            trainable = False
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            data, trainable = self.ep.constants[target], False
        else:
            raise FrontendError(f"input '{node.name}' of kind {spec.kind.name} is not supported")
        arr = _numpy(data, f"'{target}'")
        return g.add_param(target, arr, trainable=trainable and np.issubdtype(arr.dtype, np.floating))

    def _outputs(self, node: FxNode) -> None:
        outs = []
        for arg, spec in zip(node.args[0], self.ep.graph_signature.output_specs):
            if spec.kind != OutputKind.USER_OUTPUT:
                warnings.warn(
                    f"{self.graph.name}: the graph does not reproduce the {spec.kind.name.lower()} of '{spec.target}'",
                    stacklevel=4,
                )
                continue
            if not isinstance(arg, FxNode) or not isinstance(self.env.get(arg), str):
                raise FrontendError(
                    f"model output {len(outs)} ({arg!r}) is not a tensor; graph outputs must be tensors"
                )
            outs.append(self.env[arg])
        self.graph.set_outputs(outs)

    # -- call_function
    def _call(self, node: FxNode):
        if node.target is operator.getitem:
            parent, index = node.args
            got = self.env[parent][index] if isinstance(self.env.get(parent), list) else None
            if got is None and node.users:
                raise FrontendError(
                    f"node '{node.name}': output {index} of '{parent.name}' ({parent.target}) is not supported"
                )
            return got
        if not isinstance(node.target, torch._ops.OpOverload):
            raise FrontendError(f"node '{node.name}': cannot import call to {node.target!r}")
        if node.target in IGNORED:
            return None
        rule = RULES.get(node.target)
        if rule is None and _is_inplace(node):
            rule = RULES.get(_functional(node.target))
        result = None
        if rule is not None:
            try:
                result = rule(self, node, _bind(node))
            except (GraphError, VerificationError, ValueError) as e:
                raise FrontendError(f"node '{node.name}' ({node.target}): {e}") from None
        if isinstance(result, list) and any(result[i] is None for i in _used_outputs(node)):
            result = None  # an output the canonical op lacks is read: keep the original op
        if result is None:
            return self._opaque(node)
        problem = self._type_mismatch(node, result)
        if problem and _is_inplace(node):  # e.g. int x.add_(0.5) keeps int; add would not
            return self._opaque(node)
        if problem:
            raise FrontendError(problem)
        return result

    def _type_mismatch(self, node: FxNode, result) -> str | None:
        """Why the imported value types differ from what export recorded (None if they agree)."""
        val = node.meta.get("val")
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        results = result if isinstance(result, list) else [result]
        for r, v in zip(results, vals):
            want = _tensor_type(v, self.symbols)
            if r is None or want is None:
                continue
            got = self.graph.type_of(r)
            if got != want:
                producer = self.graph.producer(r)
                return (
                    f"node '{node.name}' ({node.target}): imported as "
                    f"{producer.op if producer else r} giving {got}, but torch.export recorded {want}"
                )
        return None

    def _opaque(self, node: FxNode):
        inputs: list[str] = []

        def template(a):
            if isinstance(a, FxNode):
                value = self.v(a)
                if value not in inputs:
                    inputs.append(value)
                return ValueRef(inputs.index(value))
            if isinstance(a, list):
                return [template(x) for x in a]
            if isinstance(a, tuple):
                return tuple(template(x) for x in a)
            return a

        args, kwargs = template(tuple(node.args)), {k: template(v) for k, v in node.kwargs.items()}
        val = node.meta.get("val")
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        types = [_tensor_type(v, self.symbols) for v in vals]
        if any(t is None for t in types):
            raise FrontendError(
                f"node '{node.name}': unmapped op {node.target} has non-tensor "
                f"outputs and cannot be kept as an opaque node"
            )
        attrs = {"framework": "torch", "target": str(node.target), "args": args, "kwargs": kwargs}
        n = self.graph.add_node(OPAQUE, inputs, attrs=attrs, name=node.name, output_types=types, meta=self._meta())
        return list(n.outputs) if isinstance(val, (list, tuple)) else n.output

    def _meta(self) -> dict[str, str]:
        stack = self.node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return {"module": path} if path else {}

    def _drop_dead_nodes(self) -> None:
        """Remove nodes no graph output depends on (e.g. unused unbind pieces); params stay."""
        for n in reversed(self.graph.nodes):
            if n.outputs and not any(self.graph.is_used(o) for o in n.outputs):
                self.graph.remove_node(n)

    # -- the interface fx_ops rules use
    def v(self, x: FxNode) -> str:
        """The graph value for fx node `x`."""
        got = self.env.get(x)
        if not isinstance(got, str):
            raise FrontendError(f"node '{self.node.name}': argument '{x}' is not a single tensor value")
        return got

    def type(self, x: FxNode) -> TensorType:
        return self.graph.type_of(self.v(x))

    def out_type(self) -> TensorType:
        return _tensor_type(self.node.meta["val"], self.symbols)

    def emit(self, op: str, inputs: list[str], *, suffix: str = "", **attrs):
        """Add a canonical node for the current fx node; its name is the fx node's plus `suffix`."""
        n = self.graph.add_node(op, inputs, attrs=attrs, name=self.node.name + suffix, meta=self._meta())
        return n.output if len(n.outputs) == 1 else list(n.outputs)

    def scalar(self, value, role: str) -> str:
        """A python number as a 0-d frozen parameter of the current node's output dtype."""
        dtype = _tensor_type(self.node.meta["val"], self.symbols).dtype
        return self.graph.add_param(f"{self.node.name}_{role}", np.asarray(value, dtype=dtype), trainable=False)

    def operand(self, x, role: str) -> str:
        return self.v(x) if isinstance(x, FxNode) else self.scalar(x, role)

    def constant(self, fill: float, shape, role: str, *, like: str) -> str:
        """A frozen parameter of `shape` filled with `fill`, dtype of value `like`."""
        dtype = self.graph.type_of(like).dtype
        return self.graph.add_param(
            f"{self.node.name}_{role}", np.full(tuple(shape), fill, dtype=dtype), trainable=False
        )

    def maybe_cast(self, value: str, dtype, suffix: str = "_cast") -> str:
        """`value` converted to `dtype` (a torch dtype; None keeps it)."""
        if dtype is None or self.graph.type_of(value).dtype == dtype_from_torch(dtype):
            return value
        return self.emit("cast", [value], suffix=suffix, dtype=dtype_from_torch(dtype))

    def transposed_source(self, x: FxNode) -> str | None:
        """For `x = t(w)` / `permute(w, [1, 0])` / `transpose(w, 0, 1)` of a 2-D `w`, the value of `w`."""
        aten = torch.ops.aten
        if x.op != "call_function" or not isinstance(x.args[0], FxNode) or self.type(x.args[0]).rank != 2:
            return None
        swaps = (
            x.target is aten.t.default
            or (x.target is aten.permute.default and [d % 2 for d in x.args[1]] == [1, 0])
            or (x.target is aten.transpose.int and {d % 2 for d in x.args[1:3]} == {0, 1})
        )
        return self.v(x.args[0]) if swaps else None
