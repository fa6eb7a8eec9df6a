"""Shrink a model to a minimal graph on which a pipeline still fails, and write it as ONNX.

--mode crash (default): the pipeline (then, with --target, the TVM build) raises; the
reduced graph must raise the same exception from the same pass. --mode mismatch: the
result's outputs differ from the unmodified graph's on seeded inputs beyond
--atol/--rtol (run compiled for --target when one is given). Delta debugging over the
nodes cuts the model at intermediate values, which become graph inputs and outputs
(like Polygraphy's 'debug reduce'). Prints the node counts before and after and the
failure; writes OUT atomically. A pipeline that does not fail is an error (exit 1).

Examples:
  graphopt reduce model.onnx -p 'fold-bn,quantize' -o min.onnx
  graphopt reduce model.onnx -p 'prune-channels{ratio=0.5}' --mode mismatch -o min.onnx
  graphopt reduce model.onnx -p default --target x86 -o min.onnx
"""

from __future__ import annotations

import argparse

from graphopt.cli_commands.common import add_shape_arguments

HELP = "shrink a model to a minimal graph on which a pipeline fails (crash or mismatch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="MODEL", help="ONNX model (or torch.export .pt2) the pipeline fails on")
    add_shape_arguments(parser)
    parser.add_argument("-p", "--pipeline", required=True, metavar="PIPELINE", help="the failing pass pipeline")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="minimal model to write")
    parser.add_argument("--mode", choices=("crash", "mismatch"), default="crash", help="what failing means")
    parser.add_argument("-t", "--target", default=None, help="also build (crash) or run (mismatch) with TVM here")
    parser.add_argument("--atol", type=float, default=1e-4, help="mismatch: absolute tolerance (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="mismatch: tolerance relative to max |output|")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    parser.add_argument("--max-runs", type=int, default=300, help="most pipeline runs to try (default 300)")


def run(args: argparse.Namespace) -> int:
    from graphopt.cli_commands.common import load_model, shape_options
    from graphopt.defaults import pipeline_text
    from graphopt.fileio import check_output_path
    from graphopt.passes import Pipeline
    from graphopt.tools.reduce import reduce_model

    pipeline = Pipeline.parse(pipeline_text(args.pipeline))  # a bad pipeline or -o fails before the model loads
    check_output_path(args.output)
    if args.target is not None:
        from graphopt.backends.tvm.targets import resolve_target

        resolve_target(args.target)
    graph = load_model(args.input, **shape_options(args))
    result = reduce_model(
        graph,
        pipeline,
        mode=args.mode,
        target=args.target,
        atol=args.atol,
        rtol=args.rtol,
        seed=args.seed,
        max_tests=args.max_runs,
        log=args.progress.log,
    )
    print(result.summary())
    print(f"wrote {result.graph.save_onnx(args.output)}")
    return 0
