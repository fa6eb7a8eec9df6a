"""A model report: per layer and in total, params, MACs, bytes, sparsity and dtype/bits (`graphopt report`).

`model_report(graph, ...)` gathers the static facts; measured ones (latency,
accuracy, int8 sensitivity from `analysis/measure.py` and `sensitivity.py`)
are added by the caller. `format_report` and `format_variants` print it,
`ModelReport.to_json()` is the `--json` form. The graph is never modified.

A *layer* is a node with MACs or parameters other than quantize/dequantize,
together with the dequantize nodes that feed it a parameter (its int8 weight
and int32 bias): so a quantized conv is one row with the conv's MACs and its
integer weight's params and bytes, as a float conv is. Each parameter counts
once, in the first layer that reads it; the rest (activation scales and zero
points, constants of shape ops) is the `other` row, so layers plus `other`
give the totals of `analysis/cost.py`. Per layer:
- params, MACs, weight bytes: `analysis/cost.py` and `analysis/params.py`
  (storage bytes: int4 packed, encodings at their size);
- disk bytes: for a `.gopt` file, the bytes its parameters take in the file
  (`storage.StorageInfo`); None for other files, whose size is reported whole;
- weight dtype and bits: of its largest parameter, bits as stored (a 16-entry
  codebook is about 4 bits); `activation` is the dtype an activation input is
  quantized to when it comes through a quantize -> dequantize pair;
- sparsity: of its largest parameter, the mask's share of pruned entries, or
  without a mask the share of exact zeros (an ONNX file keeps no masks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.analysis.cost import graph_cost, human_bytes, human_count
from graphopt.analysis.params import count_param

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.storage import StorageInfo

__all__ = ["LayerReport", "ModelReport", "model_report", "format_report", "format_variants"]

_QDQ = ("quantize", "dequantize")


@dataclass(frozen=True)
class LayerReport:
    name: str
    op: str
    nodes: tuple[str, ...]  # the layer's node, then the dequantize nodes folded into it
    params: int
    macs: int
    weight_bytes: int
    disk_bytes: int | None
    weight_dtype: str | None
    weight_bits: float | None
    activation_dtype: str | None
    sparsity: float
    encoding: str | None
    unknown_macs: bool
    int8_sqnr_db: float | None = None  # output SQNR with only this layer int8 (--sensitivity)


@dataclass
class ModelReport:
    name: str
    path: str | None
    format: str  # "onnx", "gopt", "pt2", "graph"
    file_bytes: int | None
    nodes: int
    params: int
    trainable_params: int
    macs: int
    weight_bytes: int
    disk_param_bytes: int | None
    sparsity: float  # of the layers' largest parameters together (their weights)
    dtypes: dict[str, dict[str, int]]  # parameter dtype -> {"params", "bytes"}
    layers: list[LayerReport]
    other: dict[str, int]  # params and weight bytes outside the layers
    unknown_macs: list[str]  # nodes whose MACs are not known (opaque, untyped)
    latency: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def layer(self, name: str) -> LayerReport:
        return next(row for row in self.layers if row.name == name)


def model_report(
    graph: Graph,
    *,
    path: str | None = None,
    file_format: str = "graph",
    file_bytes: int | None = None,
    storage: StorageInfo | None = None,
) -> ModelReport:
    """The static report of `graph`; `storage` (from `storage.read_compressed`) gives per-parameter disk bytes."""
    cost = graph_cost(graph)
    disk = {p.name: p.nbytes for p in storage.params} if storage is not None else None
    claimed: set[str] = set()
    layers = []
    for node in graph.nodes:
        c = cost.node(node.name)
        if node.op in _QDQ or not (c.params or c.macs or c.unknown):
            continue
        row = _layer(graph, node, c, claimed, disk)
        if row is not None:
            layers.append(row)
    counts = {name: count_param(name, p) for name, p in graph.params.items()}
    rest = [counts[n] for n in graph.params if n not in claimed]
    weights = [(_largest(graph, r), r.sparsity) for r in layers if r.weight_dtype is not None]
    sparse = sum(n * s for n, s in weights) / max(sum(n for n, _ in weights), 1)
    by_dtype: dict[str, dict[str, int]] = {}
    for pc in counts.values():
        entry = by_dtype.setdefault(pc.dtype, {"params": 0, "bytes": 0})
        entry["params"] += pc.elements
        entry["bytes"] += pc.nbytes
    return ModelReport(
        name=graph.name,
        path=path,
        format=file_format,
        file_bytes=file_bytes,
        nodes=len(graph.nodes),
        params=cost.params,
        trainable_params=cost.trainable_params,
        macs=cost.macs,
        weight_bytes=cost.weight_bytes,
        disk_param_bytes=storage.param_bytes if storage is not None else None,
        sparsity=float(sparse),
        dtypes=dict(sorted(by_dtype.items())),
        layers=layers,
        other={"params": sum(p.elements for p in rest), "weight_bytes": sum(p.nbytes for p in rest)},
        unknown_macs=list(cost.unknown),
    )


def _layer(graph: Graph, node, c, claimed: set[str], disk: dict[str, int] | None) -> LayerReport | None:
    """One row: the node plus the dequantize nodes feeding it a parameter; None when everything is claimed."""
    nodes, params, activation = [node.name], list(c.param_names), None
    for v in node.inputs:
        producer = graph.producer(v)
        if producer is None or producer.op != "dequantize":
            continue
        source = graph.producer(producer.inputs[0])
        if graph.is_param(producer.inputs[0]):
            nodes.append(producer.name)
            params += [p for p in producer.inputs if graph.is_param(p)]
        elif source is not None and source.op == "quantize" and activation is None:
            activation = graph.type_of(source.outputs[0]).dtype
    mine = [p for p in dict.fromkeys(params) if p not in claimed]
    if not mine and not c.macs and not c.unknown:
        return None
    claimed.update(mine)
    counts = [count_param(p, graph.param(p)) for p in mine]
    main = max(counts, key=lambda pc: pc.elements, default=None)
    return LayerReport(
        name=node.name,
        op=node.op,
        nodes=tuple(nodes),
        params=sum(pc.elements for pc in counts),
        macs=c.macs,
        weight_bytes=sum(pc.nbytes for pc in counts),
        disk_bytes=None if disk is None else sum(disk.get(p, 0) for p in mine),
        weight_dtype=None if main is None else main.dtype,
        weight_bits=None if main is None else round(main.bits, 3),
        activation_dtype=activation,
        sparsity=0.0 if main is None else _sparsity(graph, main.name),
        encoding=None if main is None else main.encoding,
        unknown_macs=c.unknown,
    )


def _largest(graph: Graph, row: LayerReport) -> int:
    """Elements of the largest parameter of a layer (the one its dtype, bits and sparsity describe)."""
    names = [v for n in row.nodes for v in graph.node(n).inputs if graph.is_param(v)]
    return max((graph.param(v).data.size for v in names), default=0)


def _sparsity(graph: Graph, name: str) -> float:
    p = graph.param(name)
    if p.mask is not None:
        return float(p.sparsity)
    data = np.asarray(p.data)
    return float(np.count_nonzero(data == 0) / data.size) if data.size else 0.0


# ---- text ------------------------------------------------------------------------------


def format_report(r: ModelReport) -> str:
    """The per-layer table, the totals, and what was measured."""
    disk = r.disk_param_bytes is not None
    sens = any(row.int8_sqnr_db is not None for row in r.layers)
    header = ["layer", "op", "params", "MACs", "weights"] + (["on disk"] if disk else [])
    header += ["dtype", "bits", "act", "sparsity"] + (["int8 SQNR"] if sens else [])
    rows = [header]
    for row in r.layers:
        cells = [row.name, row.op + ("?" if row.unknown_macs else ""), human_count(row.params)]
        cells += [human_count(row.macs), human_bytes(row.weight_bytes)]
        cells += [human_bytes(row.disk_bytes or 0)] if disk else []
        cells += [row.weight_dtype or "", "" if row.weight_bits is None else f"{row.weight_bits:.2f}"]
        cells += [row.activation_dtype or "", f"{row.sparsity:.1%}" if row.weight_dtype else ""]
        if sens:
            cells.append("" if row.int8_sqnr_db is None else f"{row.int8_sqnr_db:.1f} dB")
        rows.append(cells)
    if r.other["params"]:
        other_disk = r.disk_param_bytes - sum(row.disk_bytes or 0 for row in r.layers) if disk else None
        rows.append(
            ["(other parameters)", "", human_count(r.other["params"]), "", human_bytes(r.other["weight_bytes"])]
            + ([human_bytes(other_disk)] if disk else [])
            + [""] * (4 + sens)
        )
    total = ["total", "", human_count(r.params), human_count(r.macs), human_bytes(r.weight_bytes)]
    total += [human_bytes(r.disk_param_bytes)] if disk else []
    rows.append(total + ["", "", "", f"{r.sparsity:.1%}"] + ([""] if sens else []))

    lines = [f"== {r.path or r.name} ({r.format}): {r.nodes} nodes"]
    lines += _align(rows, text_columns=2)
    size = f"file {human_bytes(r.file_bytes)} ({r.file_bytes:,} bytes)" if r.file_bytes is not None else "no file"
    dtypes = ", ".join(f"{d} {human_count(v['params'])}" for d, v in r.dtypes.items())
    lines.append(f"{size}; parameters by dtype: {dtypes or 'none'}")
    if r.unknown_macs:
        lines.append(
            f"partial: {len(r.unknown_macs)} node(s) of unknown cost count 0 MACs: {', '.join(r.unknown_macs)}"
        )
    if r.latency is not None:
        lat = r.latency
        lines.append(
            f"latency ({lat['target']}, TVM): median {lat['median_ms']:.3f} ms, min {lat['min_ms']:.3f} ms "
            f"over {lat['runs']} runs (load average {lat['load_avg_1m']:.2f})"
        )
    if r.accuracy is not None:
        acc = r.accuracy
        lines.append(f"accuracy ({acc['dataset']} {acc['split']}, {acc['samples']} samples): top-1 {acc['top1']:.2%}")
    if r.sensitivity is not None and r.sensitivity.get("all_layers_db") is not None:
        lines.append(f"int8 SQNR with every layer quantized: {r.sensitivity['all_layers_db']:.1f} dB")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def format_variants(reports: list[ModelReport]) -> str:
    """One row per model: totals, file size, latency and accuracy, each relative to the first model."""
    base = reports[0]
    rows = [["model", "params", "MACs", "weights", "file", "sparsity", "latency", "accuracy"]]
    for r in reports:
        rows.append(
            [
                r.path or r.name,
                _rel(human_count(r.params), r.params, base.params),
                _rel(human_count(r.macs), r.macs, base.macs),
                _rel(human_bytes(r.weight_bytes), r.weight_bytes, base.weight_bytes),
                "" if r.file_bytes is None else _rel(human_bytes(r.file_bytes), r.file_bytes, base.file_bytes),
                f"{r.sparsity:.1%}",
                ""
                if r.latency is None
                else _rel(
                    f"{r.latency['median_ms']:.3f} ms", r.latency["median_ms"], (base.latency or {}).get("median_ms")
                ),
                "" if r.accuracy is None else f"{r.accuracy['top1']:.2%}",
            ]
        )
    return "\n".join(_align(rows, text_columns=1))


def _rel(text: str, value: float, base: float | None) -> str:
    return f"{text} ({value / base:.2f}x)" if base else text


def _align(rows: list[list[str]], text_columns: int) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
