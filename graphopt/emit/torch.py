"""torch emitter: Graph → trainable `torch.fx.GraphModule`, and trained weights back.

`emit_torch(graph)` builds one fx node per graph node:
- a placeholder per graph input (`forward(*graph.inputs)`, names made identifiers);
- a `get_attr` per parameter. Float parameters with `trainable=True` are
  `nn.Parameter`s (requires_grad); the rest (frozen, integer, scalars) are buffers.
  Data is copied, so the module never aliases the graph's numpy arrays.
- `call_function(ops.impl, inputs, attrs)` for canonical ops (multi-output ops
  are followed by `getitem`s); opaque torch nodes call their original
  `OpOverload` with the argument template filled in; opaque ONNX nodes raise
  EmitError.
`forward` returns one tensor for a single graph output, else a tuple.

Attribute names: a parameter name is made a Python identifier by replacing every
character outside [A-Za-z0-9_] with "_" (prefixing "p_" where it starts with a
digit) and suffixing "_1", "_2", ... on collision; `layer1.0.conv1.weight`
becomes `layer1_0_conv1_weight`. The module keeps the mapping, graph name →
attribute name, in `module.param_names` (same for inputs in `module.input_names`).

`emit_torch(graph, impls={op: fn})` calls `fn` instead of an op's reference
implementation (QAT's straight-through rounding); `outputs=[...]` makes the
module return other values too (calibration observers, `graph.run(capture=)`).

Parameters are read from `data`, which is the effective tensor (masked entries
are zero, encodings decoded), so masks and encodings need no handling here.

`write_back(graph, module)` copies trained values back into the graph in place.
"""

from __future__ import annotations

import keyword
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from graphopt.errors import EmitError
from graphopt.ir.ops import ValueRef, get_op
from graphopt.ir.types import from_torch_tensor, to_torch_tensor

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

__all__ = ["emit_torch", "write_back", "resolve_op", "fill_template"]


def emit_torch(
    graph: "Graph", *, impls: Mapping[str, Callable] | None = None, outputs: Sequence[str] | None = None
) -> fx.GraphModule:
    """A `torch.fx.GraphModule` computing `graph`; its float trainable parameters are `nn.Parameter`s.

    impls: op name -> function used in place of that canonical op's reference impl.
    outputs: the values `forward` returns (default `graph.outputs`).
    """
    impls = dict(impls or {})
    for op in impls:
        get_op(op)  # unknown op names are an error, not silently unused
    outputs = list(graph.outputs if outputs is None else outputs)
    for o in outputs:
        graph.value(o)
    root = nn.Module()
    g = fx.Graph()
    names: set[str] = set()
    env: dict[str, fx.Node] = {}
    input_names = {}
    for i in graph.inputs:
        input_names[i] = _identifier(i, names)
        env[i] = g.placeholder(input_names[i])
    param_names = {}
    for name, p in graph.params.items():
        attr = param_names[name] = _identifier(name, names)
        tensor = to_torch_tensor(p.data)
        if p.trainable and tensor.is_floating_point():
            root.register_parameter(attr, nn.Parameter(tensor, requires_grad=True))
        else:
            root.register_buffer(attr, tensor)
    for node in graph.nodes:
        args = []
        for v in node.inputs:
            if v not in env:  # parameters are fetched where first used
                env[v] = g.get_attr(param_names[v])
            args.append(env[v])
        outs = _call(g, node, args, impls)
        for o, fx_node in zip(node.outputs, outs):
            env[o] = fx_node
    for o in outputs:
        if o not in env:
            env[o] = g.get_attr(param_names[o])
    results = [env[o] for o in outputs]
    g.output(results[0] if len(results) == 1 else tuple(results))
    module = fx.GraphModule(root, g, class_name=_identifier(graph.name, set()))
    module.param_names = param_names
    module.input_names = input_names
    return module


def _call(g: fx.Graph, node: "Node", args: list[fx.Node], impls: Mapping[str, Callable]) -> list[fx.Node]:
    if node.is_opaque:
        if node.attrs.get("framework") != "torch":
            raise EmitError(
                f"node '{node.name}': opaque {node.attrs.get('framework')} op "
                f"'{node.attrs.get('op_type')}' cannot be emitted to torch"
            )
        fn = resolve_op(node.attrs["target"], node.name)
        call = g.create_node(
            "call_function",
            fn,
            fill_template(node.attrs.get("args", ()), args),
            fill_template(node.attrs.get("kwargs", {}), args),
            name=node.name,
        )
    else:
        fn = impls.get(node.op) or get_op(node.op).impl
        call = g.create_node("call_function", fn, tuple(args), _plain(dict(node.attrs)), name=node.name)
    if len(node.outputs) == 1:
        return [call]
    return [g.call_function(operator.getitem, (call, i)) for i in range(len(node.outputs))]


def resolve_op(target: str, node: str = "?"):
    """`"aten.pixel_shuffle.default"` → `torch.ops.aten.pixel_shuffle.default`."""
    parts = target.split(".")
    try:
        ns, op = parts[0], parts[1]
        overload = parts[2] if len(parts) > 2 else "default"
        return getattr(getattr(getattr(torch.ops, ns), op), overload)
    except (AttributeError, IndexError, RuntimeError):
        raise EmitError(f"node '{node}': torch op '{target}' does not exist in this torch") from None


def fill_template(template: Any, args: Sequence[Any]) -> Any:
    """An opaque node's argument template with each ValueRef(i) replaced by the i-th input."""
    if isinstance(template, ValueRef):
        return args[template.index]
    if isinstance(template, list):
        return [fill_template(x, args) for x in template]
    if isinstance(template, tuple):
        return tuple(fill_template(x, args) for x in template)
    if isinstance(template, dict):
        return {k: fill_template(v, args) for k, v in template.items()}
    return _plain(template)


def _plain(v: Any) -> Any:
    """Attribute values as fx accepts them: numpy scalars and arrays become Python values."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _identifier(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    if base[0].isdigit():
        base = "p_" + base
    cand, i = base, 0
    while cand in taken or keyword.iskeyword(cand) or cand in _RESERVED or hasattr(fx.GraphModule, cand):
        i += 1
        cand = f"{base}_{i}"
    taken.add(cand)
    return cand


# Instance attributes of a GraphModule and names the generated code relies on.
_RESERVED = {"self", "training", "param_names", "input_names", "meta", "torch", "fx", "builtins"}


def write_back(graph: "Graph", module: nn.Module) -> list[str]:
    """Copy the trainable parameters of `module` (from `emit_torch(graph)`) into `graph`, in place.

    Uses `graph.set_param`: a parameter's mask is kept and re-applied (pruned
    entries stay zero), its encoding is dropped (it described the old data).
    Returns the names written.
    """
    names = getattr(module, "param_names", None)
    if names is None:
        raise EmitError("write_back needs a module made by emit_torch (it has no param_names)")
    written = []
    for name, attr in names.items():
        if name not in graph.params or not graph.params[name].trainable:
            continue
        tensor = getattr(module, attr, None)
        if not isinstance(tensor, nn.Parameter):
            continue
        graph.set_param(name, from_torch_tensor(tensor, graph.params[name].data.dtype.name))
        written.append(name)
    return written
