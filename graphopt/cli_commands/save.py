"""Run a pass pipeline on an ONNX model and write a compressed model file (.gopt).

The file stores what the passes made at its compressed size: pruned weights as
relative indices and values, shared and lookup-table weights as packed indices
and a codebook, binary weights as bits, power-of-two weights as codes, then
Huffman-coded (README, "Compressed model files"). Read it back with
`graphopt.load_compressed`; `graphopt show model.gopt` lists how each parameter
is stored. The file is written atomically, and only when every pass succeeded.

Example:
  graphopt save -p 'fold-bn,prune-magnitude{sparsity=0.9},share-weights{clusters=16}' \\
      model.onnx -o model.gopt
"""

from __future__ import annotations

import argparse
import os

from graphopt.cli_commands.calibration import add_calib_argument, load_calibration
from graphopt.cli_commands.common import add_shape_arguments
from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_PIPELINE_NAME, pipeline_text

HELP = "run a pass pipeline on an ONNX model and write a compressed model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="model to compress")
    add_shape_arguments(parser)
    parser.add_argument(
        "-p",
        "--pipeline",
        required=True,
        metavar="PIPELINE",
        help=f"pass pipeline text ('{DEFAULT_PIPELINE_NAME}': the cleanups, {DEFAULT_PIPELINE})",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.gopt", help="where to write the file")
    parser.add_argument("--no-entropy", action="store_true", help="store packed n-bit streams without Huffman coding")
    parser.add_argument("--no-verify", action="store_true", help="skip the numerical check after each pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verifier's random inputs (default 0)")
    add_calib_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphopt.cli_commands.common import load_model, shape_options, warn
    from graphopt.fileio import check_output_path
    from graphopt.passes import Pipeline, default_instruments
    from graphopt.quant.calibration_data import NoticingContext
    from graphopt.storage import save_compressed

    progress = args.progress
    pipeline = Pipeline.parse(pipeline_text(args.pipeline))  # a bad pipeline or -o fails before any work
    check_output_path(args.output)
    graph = load_model(args.input, **shape_options(args))
    ctx = NoticingContext(
        instruments=default_instruments(verify=not args.no_verify),
        seed=args.seed,
        calibration=load_calibration(args, graph),
        log=progress.log,
        notice=warn,
    )
    result = pipeline.run(graph, ctx)
    print(result.report())
    path = save_compressed(result.graph, args.output, entropy=not args.no_entropy)
    before, after = os.path.getsize(args.input), os.path.getsize(path)
    print(f"wrote {path}: {after:,} bytes ({before:,} bytes in, {before / max(after, 1):.1f}x smaller)")
    return 0
