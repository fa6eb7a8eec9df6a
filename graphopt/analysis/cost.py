"""Cost of a graph from its static shapes: parameters, weight bytes, MACs and activation sizes.

Per node (`node_cost`) and per graph (`graph_cost`, memoized by graph version so
it never goes stale). The conventions, so that numbers compare with the figures
papers and model zoos quote:

- MACs (multiply-accumulates) are counted for the ops that do them:
  conv `out_elements * in_channels/groups * prod(kernel)`, linear
  `out_elements * in_features`, matmul `out_elements * K` (batched and
  broadcast alike), conv_transpose `in_elements * out_channels/groups *
  prod(kernel)`. Bias adds are not counted.
- Every other op counts 0 MACs: elementwise ops, norms, softmax, pooling,
  embedding lookups, shape ops, quantize/dequantize. Their cost is memory
  traffic, reported per node as output elements and bytes.
- An opaque node counts 0 MACs and is flagged `unknown`, so a report can say
  its totals are partial; so is a node whose types are not known.
- A symbolic dimension (an ONNX "batch") is counted as 1 and flagged `symbolic`.
- A node's params are the elements of the parameters it reads directly
  (each once per node); a weight behind a `dequantize` belongs to the
  dequantize. Graph totals count every parameter once, however many nodes
  read it (tied weights), and include non-trainable constants (batch-norm
  statistics, scalars); `trainable_params` is what torch's `parameters()` holds.
- Bytes are storage bytes from `analysis/params.count_param` (int4 packed,
  encodings at their size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphopt.analysis.params import count_param, count_params
from graphopt.ir.types import DTYPES, TensorType

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node

__all__ = ["NodeCost", "GraphCost", "node_cost", "graph_cost", "format_cost_table", "human_count", "human_bytes"]


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    module: str | None  # torch module path (`node.meta["module"]`), when the frontend knew it
    param_names: tuple[str, ...]  # parameters read directly, each once
    params: int  # their elements
    weight_bytes: int  # their storage bytes
    macs: int
    output_elements: int
    output_bytes: int
    unknown: bool = False  # opaque or untyped: MACs are not known (counted as 0)
    symbolic: bool = False  # a symbolic dimension was counted as 1


@dataclass(frozen=True)
class GraphCost:
    nodes: tuple[NodeCost, ...]  # graph order
    params: int  # every parameter once
    trainable_params: int
    weight_bytes: int
    macs: int
    _by_name: dict[str, NodeCost] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})

    def node(self, name: str) -> NodeCost | None:
        """The cost of node `name`, None when the graph has no such node."""
        return self._by_name.get(name)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Nodes whose MACs are not known (opaque or untyped); the MAC total leaves them out."""
        return tuple(n.name for n in self.nodes if n.unknown)

    @property
    def symbolic(self) -> bool:
        return any(n.symbolic for n in self.nodes)

    def same_totals(self, other: GraphCost) -> bool:
        """Whether params, weight bytes and MACs are all equal."""
        return (self.params, self.weight_bytes, self.macs) == (other.params, other.weight_bytes, other.macs)


# ---- per node -----------------------------------------------------------------------


def _numel(t: TensorType) -> tuple[int, bool]:
    """(elements, whether a symbolic dim was counted as 1)."""
    return math.prod(_static(t.shape)), not t.is_static


def _static(dims: Sequence) -> list[int]:
    """Dims with each symbolic one counted as 1."""
    return [d if isinstance(d, int) else 1 for d in dims]


def _conv_macs(out: int, weight: TensorType) -> int | None:
    # weight [out, in/groups, *kernel]: each output element sums in/groups * prod(kernel) products
    return out * math.prod(_static(weight.shape[1:])) if weight.rank >= 2 else None


def _linear_macs(out: int, weight: TensorType) -> int | None:
    # weight [out, in]: each output element sums `in` products
    return out * _static(weight.shape)[1] if weight.rank == 2 else None


def _matmul_macs(out: int, a: TensorType) -> int | None:
    # a [..., M, K] (or [K] as a vector): each output element sums K products
    return out * _static(a.shape)[-1] if a.rank >= 1 else None


# op -> (index of the input whose type gives the reduction size, MACs from (output elements, that type);
# None when the type does not fit the op, which only an unverified graph has)
_MAC_RULES = {
    "conv": (1, _conv_macs),
    "linear": (1, _linear_macs),
    "matmul": (0, _matmul_macs),
}


def node_cost(graph: Graph, node: Node) -> NodeCost:
    """Params, weight bytes, MACs and output size of one node (see the module doc for the conventions)."""
    names = tuple(dict.fromkeys(v for v in node.inputs if graph.is_param(v)))
    counts = [count_param(v, graph.param(v)) for v in names]
    out_types = [graph.value(o).type for o in node.outputs]
    unknown = node.is_opaque or any(t is None for t in out_types)
    symbolic = False
    out_elements = out_bytes = 0
    for t in out_types:
        if t is not None:
            n, sym = _numel(t)
            out_elements += n
            out_bytes += -(-n * DTYPES[t.dtype].bits // 8)
            symbolic |= sym
    macs = 0
    rule = _MAC_RULES.get(node.op)
    if node.op == "conv_transpose" and not unknown:
        # weight [in, out/groups, *kernel]: every input element is multiplied into out/groups * prod(kernel) outputs
        x, w = (graph.value(v).type for v in node.inputs[:2])
        if x is None or w is None:
            unknown = True
        else:
            macs = _numel(x)[0] * math.prod(_static(w.shape[1:]))
            symbolic |= not x.is_static
    elif rule is not None and not unknown:
        index, fn = rule
        operand = graph.value(node.inputs[index]).type if index < len(node.inputs) else None
        counted = None if operand is None else fn(out_elements, operand)
        if counted is None:
            unknown = True
        else:
            macs = counted
            symbolic |= not operand.is_static
    return NodeCost(
        name=node.name,
        op=node.op,
        module=node.meta.get("module"),
        param_names=names,
        params=sum(c.elements for c in counts),
        weight_bytes=sum(c.nbytes for c in counts),
        macs=macs,
        output_elements=out_elements,
        output_bytes=out_bytes,
        unknown=unknown,
        symbolic=symbolic,
    )


# ---- per graph ----------------------------------------------------------------------


def graph_cost(graph: Graph) -> GraphCost:
    """Costs of every node and the totals; memoized until the graph is next edited."""
    return graph.cached("cost", lambda: _graph_cost(graph))


def _graph_cost(graph: Graph) -> GraphCost:
    nodes = tuple(node_cost(graph, n) for n in graph.nodes)
    summary = count_params(graph)
    return GraphCost(
        nodes=nodes,
        params=summary.elements,
        trainable_params=summary.trainable_elements,
        weight_bytes=summary.nbytes,
        macs=sum(n.macs for n in nodes),
    )


# ---- the table ----------------------------------------------------------------------


def human_count(n: int) -> str:
    """1234 -> '1.23K', 1.82e9 -> '1.82G' (SI: K = 1e3, M = 1e6, G = 1e9, T = 1e12)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """Bytes in SI units: 46756048 -> '46.76MB'."""
    return human_count(n) + "B"


def _ratio(before: int, after: int) -> str:
    return f"({after / before:.2f}x)" if before else "(n/a)"


def _shown(c: NodeCost) -> bool:
    return bool(c.params or c.macs or c.unknown)


def format_cost_table(before: GraphCost, after: GraphCost | None = None, *, top: int | None = None) -> str:
    """Per-layer cost rows and totals; with `after`, side by side, rows matched by node name.

    A row is a node with parameters or MACs, or of unknown cost (its op marked '?').
    Nodes only in `before` show as 'removed', nodes only in `after` as 'added'.
    The last column, 'kept', is MACs after / before (params for layers without MACs).
    `top` keeps the `top` rows with the most MACs (then params) before, in graph order.
    The totals follow: params, MACs and weight bytes, with the ratio after / before.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    names = [c.name for c in before.nodes if _shown(c)]
    if after is not None:
        names += [c.name for c in after.nodes if _shown(c) and before.node(c.name) is None]
    hidden = 0
    if top is not None and len(names) > top:
        ref = {n: before.node(n) or after.node(n) for n in names}
        keep = set(sorted(names, key=lambda n: (ref[n].macs, ref[n].params), reverse=True)[:top])
        hidden = len(names) - len(keep)
        names = [n for n in names if n in keep]
    modules = any((before.node(n) or after.node(n)).module for n in names)

    header = ["node"] + (["module"] if modules else []) + ["op", "params", "MACs"]
    if after is not None:
        header += ["params after", "MACs after", "kept"]
    rows = [header]
    for name in names:
        b = before.node(name)
        a = after.node(name) if after is not None else None
        ref = b or a
        row = [name] + ([ref.module or ""] if modules else []) + [ref.op + ("?" if ref.unknown else "")]
        row += [human_count(b.params), human_count(b.macs)] if b is not None else ["added", ""]
        if after is not None:
            if a is None:
                row += ["removed", "", ""]
            else:
                row += [human_count(a.params), human_count(a.macs), _kept(b, a)]
        rows.append(row)
    total = ["total"] + ([""] if modules else []) + ["", human_count(before.params), human_count(before.macs)]
    if after is not None:
        total += [human_count(after.params), human_count(after.macs), _kept_totals(before, after)]
    rows.append(total)

    lines = _align(rows, text_columns=2 + modules)
    if hidden:
        lines.insert(-1, f"... {hidden} smaller rows not shown")
    lines.append(_summary(before, after))
    lines += _notes(before, after)
    return "\n".join(lines)


def _kept(b: NodeCost | None, a: NodeCost) -> str:
    if b is None:
        return ""
    if b.macs:
        return f"{100 * a.macs / b.macs:.1f}%"
    return f"{100 * a.params / b.params:.1f}%" if b.params else ""


def _kept_totals(before: GraphCost, after: GraphCost) -> str:
    if before.macs:
        return f"{100 * after.macs / before.macs:.1f}%"
    return f"{100 * after.params / before.params:.1f}%" if before.params else ""


def _summary(before: GraphCost, after: GraphCost | None) -> str:
    parts = []
    for label, attr, fmt in (
        ("params", "params", human_count),
        ("MACs", "macs", human_count),
        ("weights", "weight_bytes", human_bytes),
    ):
        b = getattr(before, attr)
        if after is None:
            parts.append(f"{label} {fmt(b)}")
        else:
            a = getattr(after, attr)
            parts.append(f"{label} {fmt(b)} -> {fmt(a)} {_ratio(b, a)}")
    return ", ".join(parts)


def _notes(before: GraphCost, after: GraphCost | None) -> list[str]:
    costs = [before] if after is None else [before, after]
    unknown = list(dict.fromkeys(n for c in costs for n in c.unknown))
    notes = []
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        notes.append(f"partial: {len(unknown)} node(s) of unknown cost (opaque or untyped) count 0 MACs: {shown}")
    if any(c.symbolic for c in costs):
        notes.append("symbolic dimensions are counted as 1")
    return notes


def _align(rows: list[list[str]], text_columns: int) -> list[str]:
    """Left-align the first `text_columns` columns, right-align the rest."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines
