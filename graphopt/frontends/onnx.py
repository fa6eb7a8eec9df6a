"""ONNX frontend: an ONNX model (file, bytes or ModelProto) -> graphopt IR.

`load_onnx` never modifies what it is given. It
1. reads the model (external data from `base_dir`), and checks it alike in all three
   forms: a graph with outputs, opsets this onnx defines, every value and initializer
   defined once, stored tensors of known element types and non-negative dims, no
   node reading a value nothing defines, no cycle, tensors holding the data their dims
   declare, standard-domain ops that their imported opset defines (a `FrontendError` names the
   file and the node, value or initializer at fault); a newer IR version warns;
2. converts models older than opset 13 up (onnx's version converter), then runs
   ONNX shape inference (strict, falling back to lenient), so values get types;
   symbolic dims keep their names, unnamed ones get one;
3. imports the copy with onnx-graphsurgeon: folds constant subgraphs (shape
   arithmetic; Q/DQ nodes are kept), cleanup, toposort;
4. maps each node through the rule table in `graphopt.frontends.onnx_ops`;
   initializers and Constant nodes become parameters (float initializers are
   trainable; other constants, statistics and quantization parameters frozen);
5. runs the fusion passes in `CANONICALIZE` on exported idioms (MatMul + Add, erf GELU,
   primitive LayerNorm) unless `canonicalize=False`, and verifies the result.

Nodes no rule maps stay opaque, emitted back as they came. Their attrs are
{"framework": "onnx", "op_type", "domain", "onnx_attrs"} plus, when needed:
  "onnx_missing_inputs":  ONNX input slots left empty; the IR inputs fill the others in order;
  "onnx_missing_outputs": ONNX output slots left empty (the IR names them anyway);
  "onnx_captures":        outer values read inside subgraph attributes (If/Loop bodies),
                          appended to the node's IR inputs so the dependency is visible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx
import onnx.shape_inference
import onnx.version_converter
import onnx_graphsurgeon as gs
from onnx import external_data_helper, numpy_helper

from graphopt.errors import FrontendError, GraphoptError, VerificationError
from graphopt.frontends.onnx_checks import check_node_ops, check_tensor_sizes
from graphopt.frontends.onnx_context import InvalidNode, NodeContext, dtype_name
from graphopt.frontends.onnx_ops import convert_node
from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import OPAQUE
from graphopt.ir.types import DTYPE_ABBREV, TensorType
from graphopt.passes.context import PassContext
from graphopt.passes.fuse_gelu import FuseGelu
from graphopt.passes.fuse_layer_norm import FuseLayerNorm
from graphopt.passes.fuse_linear_bias import FuseLinearBias

__all__ = ["load_onnx", "CANONICALIZE"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def load_onnx(
    path_or_proto: str | Path | bytes | onnx.ModelProto,
    *,
    name: str | None = None,
    fold_constants: bool = True,
    canonicalize: bool = True,
    base_dir: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int | str]] | None = None,
    dynamic_batch: bool = False,
) -> Graph:
    """Import an ONNX model as a Graph; raises FrontendError naming the file and node at fault.

    External data is read from `base_dir`, by default the file's directory; bytes and
    ModelProto inputs have none, so they need `base_dir` if they use external data.
    input_shapes / dynamic_batch: replace graph inputs' shapes before import (`graphopt.shapes`):
    static sizes for a dynamic file, or a symbol such as "N" for a batch chosen at run time.
    """
    from graphopt.shapes import apply_to_onnx

    model, src, stem = _read(path_or_proto, base_dir)
    model = apply_to_onnx(model, input_shapes, dynamic_batch)
    _check_structure(model.graph, src)
    check_tensor_sizes(_tensors(model.graph), src)
    check_node_ops(model, _all_graphs(model.graph), _node_label, src)
    model, upgraded_from = _upgrade_opset(model)
    model, strict_note = _infer_shapes(model)
    types = _type_table(model)
    _fill_missing_types(model, types)
    gsg = _import_gs(model, fold_constants)
    opsets = {d.domain or "": d.version for d in model.opset_import}
    graph = Graph(name or stem or model.graph.name or "graph")
    graph.metadata = {
        "source": "onnx",
        "opset": opsets.get("", opsets.get("ai.onnx", 0)),
        "opset_imports": opsets,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if upgraded_from:
        graph.metadata["upgraded_from_opset"] = upgraded_from
    if strict_note:
        graph.metadata["shape_inference"] = strict_note
    try:
        _build(graph, gsg, model, types, src)
        if canonicalize:
            ctx = PassContext()
            for fusion in CANONICALIZE:
                fusion.run(graph, ctx)
        graph.cleanup()
        check_types = all(v.type is not None for v in graph.values.values())
        graph.verify(check_types=check_types)
    except (VerificationError, GraphoptError) as e:
        if isinstance(e, FrontendError):
            raise
        raise FrontendError(f"{src}: the imported graph is invalid: {e}") from None
    return graph


# --- reading and checking ---------------------------------------------------------------


def _read(source, base_dir) -> tuple[onnx.ModelProto, str, str | None]:
    """A private, checked copy of the model, a label for messages and a default graph name."""
    stem = None
    if isinstance(source, onnx.ModelProto):
        src = f"ONNX model '{source.graph.name or '<unnamed>'}'"
        loader = lambda: _copy(source)  # noqa: E731
    elif isinstance(source, (bytes, bytearray)):
        src = "ONNX bytes"
        loader = lambda: onnx.load_model_from_string(bytes(source))  # noqa: E731
    else:
        path = Path(source)
        src, stem = f"ONNX file '{path}'", path.stem
        if path.is_dir():
            raise FrontendError(f"{src}: is a directory, not an ONNX file")
        if not path.is_file():
            raise FrontendError(f"{src}: no such file")
        base_dir = path.parent if base_dir is None else base_dir
        loader = lambda: onnx.load(str(path), load_external_data=False)  # noqa: E731
    try:
        model = loader()
    except Exception as e:
        raise FrontendError(f"{src}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.HasField("graph") or not model.graph.output:
        raise FrontendError(f"{src}: the model has no graph or no graph outputs (empty or truncated file?)")
    _check_versions(model, src)
    _load_external_data(model, src, base_dir)
    return model, src, stem


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _check_versions(model: onnx.ModelProto, src: str) -> None:
    """Opsets this onnx defines, one per domain; a newer IR version is read as the newest known."""
    if not model.opset_import:
        raise FrontendError(f"{src}: the model declares no opset (truncated file?)")
    seen: dict[str, int] = {}
    for d in model.opset_import:
        domain = "" if d.domain == "ai.onnx" else d.domain
        if domain in seen:
            raise FrontendError(
                f"{src}: the model imports domain '{d.domain or 'ai.onnx'}' twice "
                f"(opsets {seen[domain]} and {d.version})"
            )
        seen[domain] = d.version
        if d.version < 1:
            raise FrontendError(
                f"{src}: domain '{d.domain or 'ai.onnx'}' is imported at opset {d.version}; opsets start at 1"
            )
    newest = onnx.defs.onnx_opset_version()
    if seen.get("", 0) > newest:
        raise FrontendError(
            f"{src}: opset {seen['']} is newer than the newest onnx {onnx.__version__} "
            f"defines ({newest}); the meaning of its operators is unknown"
        )
    if model.ir_version > onnx.IR_VERSION:
        warnings.warn(
            f"{src}: IR version {model.ir_version} is newer than the newest onnx "
            f"{onnx.__version__} knows; read as IR version {onnx.IR_VERSION}, "
            f"fields it does not know are ignored",
            stacklevel=4,
        )
        model.ir_version = onnx.IR_VERSION


def _load_external_data(model: onnx.ModelProto, src: str, base_dir) -> None:
    """Tensors stored outside the model read from `base_dir` (onnx refuses paths leaving it)."""
    external = [(t, label) for t, label in _tensors(model.graph) if external_data_helper.uses_external_data(t)]
    if not external:
        return
    if base_dir is None:
        t, label = external[0]
        where = {e.key: e.value for e in t.external_data}.get("location", "?")
        raise FrontendError(
            f"{src}: {label} keeps its data in external file '{where}', and bytes or "
            f"a ModelProto have no directory to find it in; pass base_dir="
        )
    try:
        external_data_helper.load_external_data_for_model(model, str(base_dir))
    except Exception as e:
        raise FrontendError(f"{src}: cannot read external data from '{base_dir}' ({type(e).__name__}: {e})") from None


def _first_output(names) -> str | None:
    return next((o for o in names if o), None)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    first = _first_output(node.output) or ""
    return f"node '{node.name}' ({node.op_type})" if node.name else f"{node.op_type} node #{index} (output '{first}')"


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _free_names(graph: onnx.GraphProto) -> dict[str, None]:
    """Names a subgraph reads from its enclosing scope, in first-use order."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    free: dict[str, None] = {}
    for n in graph.node:
        reads = [i for i in n.input if i] + [c for g in _subgraphs(n) for c in _free_names(g)]
        free.update((r, None) for r in reads if r not in defined)
        defined.update(n.output)
    free.update((o.name, None) for o in graph.output if o.name not in defined)
    return free


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph in it, nested ones included."""
    yield graph
    for n in graph.node:
        for g in _subgraphs(n):
            yield from _all_graphs(g)


def _tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every tensor stored in `graph` and its subgraphs, with a label for messages."""
    for g in _all_graphs(graph):
        yield from ((t, f"initializer '{t.name}'") for t in g.initializer)
        for t in g.sparse_initializer:
            yield t.values, f"sparse initializer '{t.values.name}'"
            yield t.indices, f"indices of sparse initializer '{t.values.name}'"
        for k, n in enumerate(g.node):
            for a in n.attribute:
                ts = (
                    [a.t]
                    if a.type == onnx.AttributeProto.TENSOR
                    else (a.tensors if a.type == onnx.AttributeProto.TENSORS else [])
                )
                yield from ((t, f"attribute '{a.name}' of {_node_label(n, k)}") for t in ts)


_ELEM_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def _first_repeat(names: list[str]) -> str | None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


def _check_tensors(graph: onnx.GraphProto, src: str) -> None:
    """Initializer names unique per graph; every stored tensor of a known element type and shape."""
    for g in _all_graphs(graph):
        dup = _first_repeat([t.name for t in g.initializer] + [t.values.name for t in g.sparse_initializer])
        if dup is not None:
            raise FrontendError(f"{src}: initializer '{dup}' is defined twice (runtimes disagree on which one counts)")
        dup = _first_repeat([i.name for i in g.input])
        if dup is not None:
            raise FrontendError(f"{src}: graph input '{dup}' is declared twice")
        for vi in [*g.input, *g.output, *g.value_info]:
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is not None and tt.elem_type and tt.elem_type not in _ELEM_TYPES:
                raise FrontendError(f"{src}: value '{vi.name}' has unknown element type {tt.elem_type}")
            dims = [] if tt is None else [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
            if any(isinstance(d, int) and d < 0 for d in dims):
                raise FrontendError(f"{src}: value '{vi.name}' has a negative dimension in its shape {dims}")
    for t, label in _tensors(graph):
        if t.data_type not in _ELEM_TYPES:
            raise FrontendError(f"{src}: {label} has unknown element type {t.data_type}")
        if any(d < 0 for d in t.dims):
            raise FrontendError(f"{src}: {label} has a negative dimension in its shape {list(t.dims)}")


def captures(node: onnx.NodeProto) -> list[str]:
    """Outer-scope values read inside `node`'s subgraph attributes."""
    names: dict[str, None] = {}
    for g in _subgraphs(node):
        names.update(_free_names(g))
    return [n for n in names if n not in node.input]


def _check_structure(graph: onnx.GraphProto, src: str) -> None:
    """Values defined once, nothing dangling, no cycles: each failure names the node and value."""
    _check_tensors(graph, src)
    defined = {i.name: "a graph input" for i in graph.input}
    defined.update((t.name, "an initializer") for t in graph.initializer)
    defined.update((t.values.name, "an initializer") for t in graph.sparse_initializer)
    producer: dict[str, int] = {}
    for k, n in enumerate(graph.node):
        for o in n.output:
            if not o:
                continue
            if o in producer:
                raise FrontendError(
                    f"{src}: value '{o}' is defined twice, by "
                    f"{_node_label(graph.node[producer[o]], producer[o])} and {_node_label(n, k)}"
                )
            if o in defined:
                raise FrontendError(f"{src}: {_node_label(n, k)} redefines '{o}', which is {defined[o]}")
            producer[o] = k
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(graph.node)))
    for k, n in enumerate(graph.node):
        for v in [i for i in n.input if i] + captures(n):
            if v in producer:
                dag.add_edge(producer[v], k)
            elif v not in defined:
                raise FrontendError(
                    f"{src}: {_node_label(n, k)} reads '{v}', which no node, graph input "
                    f"or initializer defines (dangling input)"
                )
    for o in graph.output:
        if o.name not in producer and o.name not in defined:
            raise FrontendError(f"{src}: graph output '{o.name}' is not defined by any node, input or initializer")
    if not nx.is_directed_acyclic_graph(dag):
        cycle = [e[0] for e in nx.find_cycle(dag)]
        path = " -> ".join(_node_label(graph.node[k], k) for k in cycle + cycle[:1])
        raise FrontendError(f"{src}: the graph has a cycle: {path}")


# --- types -------------------------------------------------------------------------------

UPGRADE_BELOW = 13  # older models are converted to this opset (the emitter's oldest)


def _upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """Models older than opset 13 converted up with onnx's version converter, when it can."""
    opset = next((d.version for d in model.opset_import if d.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= UPGRADE_BELOW:
        return model, None
    try:
        return onnx.version_converter.convert_version(model, UPGRADE_BELOW), opset
    except Exception:
        return model, None  # the rules also read the older forms


def _infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Shape-inferred copy; strict mode when the model allows it (else a note why not)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True), ""
    except Exception as strict_error:
        note = f"lenient ({type(strict_error).__name__}: {str(strict_error).splitlines()[0][:200]})"
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True), note
    except Exception as e:
        return model, f"none ({type(e).__name__})"


def tensor_type(tp: onnx.TypeProto, name: str) -> TensorType | None:
    """IR type of an ONNX tensor type; unnamed unknown dims become '<name>_dim<axis>'."""
    if not tp.HasField("tensor_type"):
        return None
    tt = tp.tensor_type
    dtype = dtype_name(tt.elem_type)
    if dtype is None or not tt.HasField("shape"):
        return None
    dims = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{name}_dim{axis}")
        for axis, d in enumerate(tt.shape.dim)
    ]
    return TensorType(tuple(dims), dtype)


def _type_table(model: onnx.ModelProto) -> dict[str, TensorType | None]:
    g = model.graph
    return {vi.name: tensor_type(vi.type, vi.name) for vi in [*g.value_info, *g.input, *g.output]}


def _fill_missing_types(model: onnx.ModelProto, types: dict[str, TensorType | None]) -> None:
    """Ask onnxruntime for the types ONNX inference could not give (e.g. contrib-domain ops)."""
    missing = [o for n in model.graph.node for o in n.output if o and types.get(o) is None]
    if not missing:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in missing:
        if name not in known:
            probe.graph.output.add().name = name
    try:
        from graphopt.backends.onnxruntime import ort_session

        outputs = ort_session(probe).get_outputs()
    except Exception:
        return  # onnxruntime cannot load it either; those values stay untyped
    for o in outputs:
        if o.name in missing and o.type.startswith("tensor(") and o.shape is not None:
            dtype = {
                "float": "float32",
                "double": "float64",
                "float16": "float16",
                "bfloat16": "bfloat16",
                "bool": "bool",
            }.get(o.type[7:-1], o.type[7:-1])
            if dtype in DTYPE_ABBREV:
                dims = [d if isinstance(d, (int, str)) else f"{o.name}_dim{a}" for a, d in enumerate(o.shape)]
                types[o.name] = TensorType(tuple(dims), dtype)


# --- graphsurgeon import -------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence graphsurgeon's and onnxruntime's warnings while folding constants."""
    import onnxruntime
    from onnx_graphsurgeon.logger import G_LOGGER

    old = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.CRITICAL
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        G_LOGGER.severity = old
        onnxruntime.set_default_logger_severity(2)  # onnxruntime's default (warning)


def _import_gs(model: onnx.ModelProto, fold: bool) -> gs.Graph:
    """graphsurgeon graph, cleaned and sorted; with `fold`, constant subgraphs are evaluated.

    Folding is for shape arithmetic: nodes reading a float initializer (a weight
    that should stay a named, trainable parameter) and Q/DQ nodes are not folded.
    """
    weights = {
        t.name
        for t in model.graph.initializer
        if t.data_type
        in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    }

    def keep(n: gs.Node) -> bool:
        return n.op in _QDQ or any(t.name in weights for t in n.inputs)

    with _quiet():
        gsg = gs.import_onnx(model)
        if fold:
            try:
                gsg.fold_constants(should_exclude_node=keep)
            except Exception:
                gsg = gs.import_onnx(model)  # folding is an optimization; start over without it
        gsg.cleanup(remove_unused_graph_inputs=False).toposort()
    return gsg


# --- building the IR --------------------------------------------------------------------------


def _build(graph: Graph, gsg: gs.Graph, model: onnx.ModelProto, types: dict[str, TensorType | None], src: str) -> None:
    initializers = {t.name for t in model.graph.initializer}
    protos = {_first_output(n.output): n for n in model.graph.node}
    for t in gsg.inputs:
        if isinstance(t, gs.Variable):
            if types.get(t.name) is None:
                raise FrontendError(
                    f"{src}: graph input '{t.name}' has no tensor type with a known rank and a supported dtype"
                )
            graph.add_input(t.name, types[t.name])
    tensors = gsg.tensors()
    tensors.update((k, t) for k, t in _captured_tensors(gsg, model.graph).items() if k not in tensors)
    for name, t in tensors.items():
        if isinstance(t, gs.Constant):
            _add_param(graph, name, t, types.get(name), trainable=name in initializers, src=src)
    graph_outputs = {t.name for t in gsg.outputs}
    reserved = set(tensors)
    opset = graph.metadata["opset"]
    for node in gsg.nodes:
        if not node.domain and _constant_node(graph, node):
            continue
        cx = NodeContext(graph, node, opset=opset, onnx_types=types, graph_outputs=graph_outputs, reserved=reserved)
        try:
            mapped, reason = convert_node(cx)
        except InvalidNode as e:
            raise FrontendError(f"{src}: {e}") from None
        if not mapped:
            proto = protos.get(_first_output([t.name for t in node.outputs]))
            _add_opaque(graph, node, proto, types, reason)
    graph.set_outputs([t.name for t in gsg.outputs])


def _captured_tensors(gsg: gs.Graph, model_graph: onnx.GraphProto) -> dict[str, gs.Tensor]:
    """Outer tensors read only inside subgraphs, which `gsg.tensors()` leaves out."""
    wanted = {c for n in model_graph.node for c in captures(n)}
    found: dict[str, gs.Tensor] = {}
    pending = [gsg]
    while pending:
        g = pending.pop()
        for node in g.nodes:
            for v in node.attrs.values():
                subs = (
                    [v]
                    if isinstance(v, gs.Graph)
                    else [x for x in v if isinstance(x, gs.Graph)]
                    if isinstance(v, list)
                    else []
                )
                for sub in subs:
                    found.update((k, t) for k, t in sub.tensors().items() if k in wanted)
                    pending.append(sub)
    return found


def _add_param(
    graph: Graph, name: str, t: gs.Constant, onnx_type: TensorType | None, *, trainable: bool, src: str
) -> None:
    try:
        data = np.asarray(t.values)
    except Exception as e:
        raise FrontendError(f"{src}: cannot read initializer '{name}': {e}") from None
    if onnx_type is not None and data.dtype.name != onnx_type.dtype and onnx_type.dtype != "bfloat16":
        data = data.astype(onnx_type.dtype)  # folded Constant attributes arrive as float64/int64
    if data.dtype.name not in DTYPE_ABBREV:
        raise FrontendError(f"{src}: initializer '{name}' has dtype {data.dtype}, which graphopt cannot hold")
    graph.add_param(name, data, trainable=trainable and data.dtype.kind == "f", unique=False)


def _constant_node(graph: Graph, node: gs.Node) -> bool:
    """Constant, or Identity of a parameter => a parameter named after the output.

    Exporters share equal initializers through Identity nodes (torch does for equal
    biases); each reader gets its own copy, so pruning one layer leaves the other alone.
    """
    attrs = node.attrs
    if node.op == "Identity":
        src = node.inputs[0].name if node.inputs else ""
        if not graph.is_param(src):
            return False
        p = graph.params[src]
        graph.add_param(node.outputs[0].name, p.data.copy(), trainable=p.trainable, unique=False)
        return True
    if node.op != "Constant":
        return False
    if "value" in attrs:
        data = np.asarray(attrs["value"].values)
    elif "value_float" in attrs or "value_floats" in attrs:
        data = np.asarray(attrs.get("value_float", attrs.get("value_floats")), dtype=np.float32)
    elif "value_int" in attrs or "value_ints" in attrs:
        data = np.asarray(attrs.get("value_int", attrs.get("value_ints")), dtype=np.int64)
    else:
        return False
    if data.dtype.name not in DTYPE_ABBREV:
        return False
    graph.add_param(node.outputs[0].name, data, trainable=False, unique=False)
    return True


def attr_value(a: onnx.AttributeProto) -> Any:
    """An ONNX attribute as a Python value: numbers, str, lists, numpy arrays; graphs stay protos."""
    v = onnx.helper.get_attribute_value(a)
    if a.type == onnx.AttributeProto.STRING:
        return _text(v)
    if a.type == onnx.AttributeProto.STRINGS:
        return [_text(s) for s in v]
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(v)
    if a.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in v]
    if a.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
        return list(v)
    return v


def _text(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _add_opaque(
    graph: Graph, node: gs.Node, proto: onnx.NodeProto | None, types: dict[str, TensorType | None], reason: str
) -> Node:
    ins = [t.name for t in node.inputs]
    while ins and not ins[-1]:
        ins.pop()
    outs = [t.name for t in node.outputs]
    while outs and not outs[-1]:
        outs.pop()
    attrs: dict[str, Any] = {"framework": "onnx", "op_type": node.op, "domain": node.domain or ""}
    if proto is not None:
        attrs["onnx_attrs"] = {a.name: attr_value(a) for a in proto.attribute}
    else:
        attrs["onnx_attrs"] = {k: (v.values if isinstance(v, gs.Constant) else v) for k, v in node.attrs.items()}
    if "" in ins:
        attrs["onnx_missing_inputs"] = [i for i, v in enumerate(ins) if not v]
    if "" in outs:
        attrs["onnx_missing_outputs"] = [i for i, v in enumerate(outs) if not v]
        outs = [o or graph.unique_name(f"{node.name or node.op}_unused{i}") for i, o in enumerate(outs)]
    extra = [c for c in captures(proto) if c in graph.values] if proto is not None else []
    if extra:
        attrs["onnx_captures"] = extra
    return graph.add_node(
        OPAQUE,
        [v for v in ins if v] + extra,
        attrs=attrs,
        name=node.name or (outs[0] if outs else node.op),
        outputs=outs,
        output_types=[types.get(o) for o in outs],
        meta={"onnx_node": node.name, "onnx_op": node.op, "unmapped": reason},
    )


# --- canonicalization of exported idioms ---------------------------------------------------------

# Registered passes (in the default pipeline too), run here directly: no instruments, no copy.
CANONICALIZE = (FuseLinearBias(), FuseGelu(), FuseLayerNorm())
