"""Input shapes given by the user: `--input-shape NAME:1x3x224x224`, `input_shapes={"x": ("N", 3, 224, 224)}`.

A dim is an int, or a symbol (a name such as "N") for a size chosen at run time:
a symbolic batch survives import, the passes (`ir/shape_inference` carries it)
and TVM lowering (`R.Tensor(("N", 3, 224, 224))`), so one build serves every
batch size. `dynamic_batch=True` (`--dynamic-batch`) makes axis 0 of every input
the symbol "N" (an input whose batch is already symbolic keeps its name).

Shapes apply where the model is read: to the ONNX proto before import (the file's
own symbols, e.g. "batch", are replaced, so `NAME:1x3x224x224` builds static),
and to torch.export's `dynamic_shapes` for an nn.Module. Every input named must
exist, have the rank given, and agree on its static dims; errors name the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from graphopt.errors import GraphoptError

Dim = int | str
InputShapes = Mapping[str, Sequence[Dim]]
BATCH_SYMBOL = "N"
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ShapeError(GraphoptError):
    """An input shape that is malformed or does not fit the model."""


def parse_input_shape(text: str) -> tuple[str, tuple[Dim, ...]]:
    """`NAME:1x3x224x224` or `NAME:N,3,224,224` -> (NAME, dims); a dim is a size >= 1 or a symbol."""
    name, sep, dims_text = text.rpartition(":")
    if not sep or not name or not dims_text:
        raise ShapeError(f"--input-shape '{text}': expected NAME:DIMS, e.g. x:1x3x224x224 or x:Nx3x224x224")
    parts = dims_text.split(",") if "," in dims_text else dims_text.split("x")
    dims: list[Dim] = []
    for p in (p.strip() for p in parts):
        if p.isdigit() and int(p) >= 1:
            dims.append(int(p))
        elif _SYMBOL.fullmatch(p):
            dims.append(p)
        else:
            raise ShapeError(
                f"--input-shape '{text}': dim '{p}' is neither a size >= 1 nor a symbol such as N "
                f"(separate dims with x, or with commas when a symbol contains an x)"
            )
    return name, tuple(dims)


def parse_input_shapes(texts: Sequence[str] | None) -> dict[str, tuple[Dim, ...]]:
    """Repeated --input-shape options as one mapping; an input named twice is an error."""
    shapes: dict[str, tuple[Dim, ...]] = {}
    for text in texts or ():
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise ShapeError(f"--input-shape names input '{name}' twice")
        shapes[name] = dims
    return shapes


def resolve_shapes(
    declared: Mapping[str, Sequence[Dim] | None], shapes: InputShapes | None, dynamic_batch: bool = False
) -> dict[str, tuple[Dim, ...]]:
    """The new shape of each input to change, checked against the model's `declared` input shapes
    (None: unknown rank). Inputs not named keep their shape (with `dynamic_batch`, a symbolic axis 0)."""
    shapes = dict(shapes or {})
    unknown = [n for n in shapes if n not in declared]
    if unknown:
        raise ShapeError(
            f"input shape for '{unknown[0]}', which is not an input of the model; its inputs: {', '.join(declared)}"
        )
    out: dict[str, tuple[Dim, ...]] = {}
    for name, old in declared.items():
        new = tuple(shapes[name]) if name in shapes else None
        if new is None and dynamic_batch and old:
            new = (old[0] if isinstance(old[0], str) else BATCH_SYMBOL, *old[1:])
        if new is None:
            continue
        _check_dims(name, new)
        if old is not None:
            if len(new) != len(old):
                raise ShapeError(f"input '{name}' has {len(old)} dims {_fmt(old)}; the shape given has {len(new)}")
            for axis, (a, b) in enumerate(zip(old, new)):
                if axis and isinstance(a, int) and isinstance(b, int) and a != b:
                    raise ShapeError(
                        f"input '{name}' has size {a} on axis {axis} ({_fmt(old)}); the shape given says {b}"
                    )
        out[name] = new
    return out


def _check_dims(name: str, dims: Sequence[Dim]) -> None:
    for d in dims:
        if isinstance(d, bool) or not (isinstance(d, str) and _SYMBOL.fullmatch(d) or isinstance(d, int) and d >= 1):
            raise ShapeError(f"input '{name}': dim {d!r} is neither a size >= 1 nor a symbol such as 'N'")


def _fmt(dims: Sequence[Dim]) -> str:
    return "x".join(map(str, dims))


def apply_to_onnx(model, shapes: InputShapes | None, dynamic_batch: bool = False):
    """A copy of ModelProto `model` whose graph inputs have the given shapes (value_info cleared,
    so shape inference re-derives every type from them); `model` itself is unchanged."""
    import onnx

    from graphopt.frontends.onnx import tensor_type

    initializers = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    declared = {}
    for vi in inputs:
        t = tensor_type(vi.type, vi.name)
        declared[vi.name] = None if t is None else t.shape
    new_shapes = resolve_shapes(declared, shapes, dynamic_batch)
    if not new_shapes:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    for vi in copy.graph.input:
        dims = new_shapes.get(vi.name)
        if dims is None:
            continue
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            entry = shape.dim.add()
            if isinstance(d, str):
                entry.dim_param = d
            else:
                entry.dim_value = d
    for vi in copy.graph.output:  # re-derived from the new inputs (the rank stays)
        for entry in vi.type.tensor_type.shape.dim:
            entry.Clear()
    return copy


def torch_dynamic_shapes(names: Sequence[str], example_shapes: Sequence[Sequence[int]], shapes, dynamic_batch):
    """torch.export's `dynamic_shapes` for the positional inputs `names` of a module traced on examples of
    `example_shapes`: a torch.export.Dim per symbolic axis (None when every input stays static)."""
    import torch

    declared = dict(zip(names, (tuple(s) for s in example_shapes)))
    new_shapes = resolve_shapes(declared, shapes, dynamic_batch)
    for name, dims in new_shapes.items():
        for axis, (a, b) in enumerate(zip(declared[name], dims)):
            if isinstance(b, int) and a != b:
                raise ShapeError(
                    f"input '{name}': the example input has size {a} on axis {axis}, the shape given says {b}; "
                    f"trace with an example of the shape you want"
                )
    if not any(isinstance(d, str) for dims in new_shapes.values() for d in dims):
        return None
    dims_by_symbol: dict[str, object] = {}
    spec = []
    for name in names:
        dims = new_shapes.get(name, ())
        spec.append(
            {
                axis: dims_by_symbol.setdefault(d, torch.export.Dim(d, min=1))
                for axis, d in enumerate(dims)
                if isinstance(d, str)
            }
            or None
        )
    return tuple(spec)
