"""Run a pass pipeline on an ONNX model and write the result.

The pipeline is MLIR-style text: passes separated by commas, options in braces,
e.g. 'fold-bn,eliminate-dead-code' (see 'graphopt passes'), or '@FILE' for a file
holding the text (over several lines, '#' comment lines allowed); without -p
(or with '-p default') the default cleanup pipeline runs. After every pass the
graph is verified structurally and, unless --no-verify, numerically against the
graph before the pass on seeded inputs, within the tolerance the pass declares.
The output is written atomically, and only when every pass succeeded.

Example:
  graphopt opt -p 'fold-bn,fold-constants,eliminate-identity,eliminate-dead-code' \\
      model.onnx -o model.opt.onnx
"""

from __future__ import annotations

import argparse
import os

from graphopt.cli_commands.calibration import add_calib_argument, load_calibration
from graphopt.cli_commands.common import add_shape_arguments
from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_PIPELINE_NAME

HELP = "run a pass pipeline on an ONNX model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="model to optimize")
    add_shape_arguments(parser)
    parser.add_argument(
        "-p",
        "--pipeline",
        default=None,
        metavar="PIPELINE",
        help=f"pass pipeline text, e.g. 'fold-bn,eliminate-dead-code', or @FILE holding it "
        f"({DEFAULT_PIPELINE_NAME}: {DEFAULT_PIPELINE})",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.onnx",
        help="where to write the result (atomically); without it nothing is written",
    )
    parser.add_argument("--dump-ir", metavar="DIR", help="write the IR before and after every pass into DIR")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the numerical check after each pass (structure is still verified)",
    )
    parser.add_argument("--print-ir", action="store_true", help="print the resulting IR on stdout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verifier's random inputs (default 0)")
    add_calib_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphopt.analysis.compare import compare_graphs
    from graphopt.cli_commands.common import load_model, op_count_table, shape_options, warn
    from graphopt.cli_commands.pipeline_arg import parse_pipeline_argument
    from graphopt.fileio import check_output_path
    from graphopt.passes import default_instruments
    from graphopt.quant.calibration_data import NoticingContext

    progress = args.progress
    pipeline = parse_pipeline_argument(args.pipeline)  # fail on a bad pipeline or -o before loading anything
    if args.output is not None:
        check_output_path(args.output)
    graph = load_model(args.input, **shape_options(args))
    ctx = NoticingContext(
        instruments=default_instruments(verify=not args.no_verify, dump_dir=args.dump_ir),
        seed=args.seed,
        calibration=load_calibration(args, graph),
        log=progress.log,
        notice=warn,
    )
    progress.log(f"running {len(pipeline)} passes{'' if args.no_verify else ' (numerically verified after each)'}")
    result = pipeline.run(graph, ctx)
    print(result.report())
    print()
    print(op_count_table(graph, result.graph))
    print(f"parameters: {_elements(graph):,} -> {_elements(result.graph):,}")
    if args.print_ir:
        print()
        print(result.graph)
    comparison = compare_graphs(graph, result.graph) if result.changed else None
    if args.output is not None:
        path = result.graph.save_onnx(args.output)
        print(f"wrote {path}")
        if comparison is not None:
            comparison = comparison.with_files(os.path.getsize(args.input), os.path.getsize(path))
    else:
        progress.log("no -o given: the result was not written")
    if comparison is not None:
        progress.log(f"before/after:\n{comparison.table()}")
    return 0


def _elements(graph) -> int:
    """Elements of every parameter, trainable or not (quantized int8 weights count too)."""
    return sum(p.data.size for p in graph.params.values())
