"""Report what a model costs, per layer and in total, and compare variants of it.

For MODEL (and each --compare OTHER): per layer, params, MACs, weight bytes
(bytes on disk per layer for a .gopt file), weight dtype and bits as stored,
activation dtype (through Q/DQ), sparsity (mask, or exact zeros); in total,
the same, the file's size and the parameters by dtype. MODEL files are .onnx,
.gopt (from 'graphopt save') or .pt2 (torch.export). Where asked:

  --latency [--target T]  build with TVM (default schedules) and time it here
  --accuracy digits       top-1 on scikit-learn's digits test split (models taking
                          [N,1,8,8] or [N,64] float32 images, 10 classes)
  --sensitivity           per layer, the output SQNR with only that layer int8
  --plot out.png          accuracy / size / latency trade-off of all models, Pareto front marked
  --json                  the whole report as JSON on stdout (nothing else there)

Examples:
  graphopt report model.onnx
  graphopt report model.onnx --compare pruned.gopt int8.onnx --latency --accuracy digits --plot tradeoff.png
"""

from __future__ import annotations

import argparse
import json
import os

from graphopt.defaults import DEFAULT_TARGET

HELP = "per-layer params, MACs, bytes, sparsity and dtypes of models; latency, accuracy, trade-off plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from graphopt.analysis.measure import DATASETS

    parser.add_argument("input", metavar="MODEL", help="model to report (.onnx, .gopt or .pt2)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="OTHER", help="variants to report beside MODEL")
    parser.add_argument(
        "--latency", action="store_true", help="build with TVM for --target and time it on this machine"
    )
    parser.add_argument("-t", "--target", default=None, help=f"TVM target for --latency (default: {DEFAULT_TARGET})")
    parser.add_argument("--accuracy", choices=DATASETS, metavar="DATASET", help="measure top-1 on DATASET: digits")
    parser.add_argument("--sensitivity", action="store_true", help="per-layer output SQNR with only that layer int8")
    parser.add_argument("--plot", metavar="OUT.png", help="write the accuracy / size / latency trade-off plot")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from graphopt import __version__
    from graphopt.analysis.report import format_report, format_variants
    from graphopt.errors import GraphoptError
    from graphopt.fileio import check_output_path

    if args.target is not None and not args.latency:
        raise GraphoptError("--target is the target of --latency: add --latency, or leave --target out")
    target = args.target or DEFAULT_TARGET
    if args.latency:
        from graphopt.backends.tvm.targets import resolve_target

        resolve_target(target)  # an unknown target fails before any work
    if args.plot is not None:
        check_output_path(args.plot)
    reports = [_report(path, args, target) for path in [args.input, *args.compare]]
    if args.plot is not None:
        from graphopt.analysis.report_plot import plot_tradeoff

        with args.progress.step(f"plotting the trade-off of {len(reports)} model(s) to {args.plot}"):
            plot_tradeoff(reports, args.plot)
    if args.json:
        doc = {"graphopt_version": __version__, "models": [r.to_json() for r in reports]}
        print(json.dumps(doc, indent=2, allow_nan=False, default=_json_default))
        return 0
    for r in reports:
        print(format_report(r))
        print()
    if len(reports) > 1:
        print(format_variants(reports))
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0


def _report(path: str, args: argparse.Namespace, target: str):
    from graphopt.analysis.report import model_report

    graph, storage, fmt = _load(path)
    report = model_report(graph, path=path, file_format=fmt, file_bytes=os.path.getsize(path), storage=storage)
    progress = args.progress
    if args.accuracy:
        _accuracy(graph, report, args)
    if args.sensitivity:
        from graphopt.analysis.measure import int8_sensitivity

        with progress.step(f"{path}: int8 sensitivity per layer"):
            report.sensitivity = int8_sensitivity(graph)
        if report.sensitivity.get("note"):
            report.notes.append(f"sensitivity: {report.sensitivity['note']}")
        per_layer = report.sensitivity["layers"]
        for i, row in enumerate(report.layers):
            if row.name in per_layer:
                from dataclasses import replace

                report.layers[i] = replace(row, int8_sqnr_db=per_layer[row.name])
    if args.latency:
        from graphopt.analysis.measure import measure_latency

        with progress.step(f"{path}: building with TVM for {target} and timing it"):
            report.latency = measure_latency(graph, target)
    return report


def _accuracy(graph, report, args: argparse.Namespace) -> None:
    from graphopt.analysis.measure import DatasetMismatch, digits_accuracy
    from graphopt.cli_commands.common import warn

    try:
        with args.progress.step(f"{report.path}: accuracy on {args.accuracy}"):
            report.accuracy = digits_accuracy(graph)
    except DatasetMismatch as e:
        message = f"--accuracy {args.accuracy} does not fit {report.path}: {e}; accuracy not measured"
        warn(message)
        report.notes.append(message)


def _load(path: str):
    """(graph, storage info of a .gopt file or None, format name)."""
    from pathlib import Path

    from graphopt.cli_commands.common import load_model
    from graphopt.storage.container import MAGIC

    with open(path, "rb") as f:  # a missing file is named by load_model below
        compressed = Path(path).suffix == ".gopt" or f.read(len(MAGIC)) == MAGIC
    if compressed:
        from graphopt.storage import read_compressed

        graph, info = read_compressed(path)
        return graph, info, "gopt"
    graph = load_model(path)
    return graph, None, "pt2" if Path(path).suffix == ".pt2" else "onnx"


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
