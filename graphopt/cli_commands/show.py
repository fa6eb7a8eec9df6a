"""Print an ONNX model's IR as graphopt sees it, then a one-line summary.

Values are %name, parameters @name; see graphopt/ir/printer.py for the format.
"""

from __future__ import annotations

import argparse

HELP = "print a model's IR and a summary (nodes, parameters, op counts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="MODEL.onnx", help="model to show")
    parser.add_argument("--summary", action="store_true", help="print only the summary line")


def run(args: argparse.Namespace) -> int:
    from graphopt.cli_commands.common import load_model, summary

    graph = load_model(args.input)
    if not args.summary:
        print(graph)
    print(summary(graph))
    return 0
