"""Print a model's IR as graphopt sees it, then a one-line summary.

MODEL is an ONNX file or a compressed model file (.gopt, from `graphopt save`);
for the latter the IR is followed by how every parameter is stored (format,
bits per element, bytes on disk) and the file's total.
Values are %name, parameters @name; see graphopt/ir/printer.py for the format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from graphopt.cli_commands.common import add_shape_arguments

HELP = "print a model's IR and a summary (nodes, parameters, op counts; storage of a .gopt file)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="MODEL", help="model to show (.onnx or .gopt)")
    add_shape_arguments(parser)
    parser.add_argument("--summary", action="store_true", help="print only the summary (and the storage table)")


def run(args: argparse.Namespace) -> int:
    from graphopt.cli_commands.common import load_model, shape_options, summary

    info = None
    if _is_compressed(args.input):
        from graphopt.storage import read_compressed

        graph, info = read_compressed(args.input)
    else:
        graph = load_model(args.input, **shape_options(args))
    if not args.summary:
        print(graph)
    print(summary(graph))
    if info is not None:
        print()
        print(storage_table(info))
    return 0


def _is_compressed(path: str) -> bool:
    from graphopt.storage.container import MAGIC

    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC or Path(path).suffix == ".gopt"
    except OSError:
        return False  # load_model names the problem


def storage_table(info) -> str:
    """Per-parameter storage of a compressed file, then header, structure and total bytes."""
    from graphopt.cli_commands.common import format_table

    rows = [("parameter", "shape", "dtype", "format", "bits/elem", "bytes")]
    for p in info.params:
        shape = "x".join(map(str, p.shape)) or "scalar"
        rows.append((p.name, shape, p.dtype, p.format, f"{p.bits:.2f}", f"{p.nbytes:,}"))
    rows.append(("parameters", "", "", "", "", f"{info.param_bytes:,}"))
    rows.append(("structure (graph, records)", "", "", "", "", f"{info.structure_bytes:,}"))
    rows.append(("header", "", "", "", "", f"{info.header_bytes:,}"))
    rows.append(("total on disk", "", "", "", "", f"{info.total_bytes:,}"))
    coding = "Huffman-coded where smaller" if info.entropy else "packed, no entropy coding"
    return f"compressed model file, format version {info.version}, streams {coding}\n" + format_table(rows)
