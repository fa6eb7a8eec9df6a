"""Compile an ONNX model with TVM for a target and save the library.

Runs the pipeline (default: the exact cleanups), lowers to Relax, applies a
tuning database if --db names one (after tuning --tune N trials into it, if
asked), builds, and writes OUT (.so for the host, .tar or .so for a cross
target) plus OUT.json with the metadata. Nothing is written on failure.

Examples:
  graphopt compile model.onnx --target x86 -o model.so
  graphopt compile model.onnx --target arm -o model.tar -p 'fold-bn,eliminate-dead-code'
  graphopt compile model.onnx --target x86 -o model.so --tune 64 --db tuning/
"""

from __future__ import annotations

import argparse

from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_TARGET

HELP = "compile an ONNX model with TVM for x86, arm or cuda and save it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="model to compile")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="library to write (.so or .tar)")
    add_target_arguments(parser)
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="MetaSchedule trials to run first (needs --db)")
    parser.add_argument("--db", metavar="DIR", help="tuning database directory (created, resumed, reused)")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--target", default=DEFAULT_TARGET,
                        help="preset (x86, arm, arm-dotprod, cuda, cuda-sm80, cuda-sm90) or a TVM "
                             f"target dict as JSON (default: {DEFAULT_TARGET})")
    parser.add_argument("-p", "--pipeline", default=None, metavar="PIPELINE",
                        help=f"pass pipeline (default: {DEFAULT_PIPELINE}; '' for none)")
    parser.add_argument("--no-verify", action="store_true", help="skip the per-pass numerical check")


def run(args: argparse.Namespace) -> int:
    from graphopt.api import optimize
    from graphopt.cli_commands.common import load_model

    progress = args.progress
    graph = load_model(args.input)
    with progress.step(f"compiling for {args.target}"):
        compiled = optimize(graph, target=args.target, pipeline=args.pipeline, tune=args.tune,
                            db=args.db, verify=not args.no_verify, log=progress.log)
    path = compiled.save(args.output)
    print(f"wrote {path} ({compiled!r})")
    return 0
