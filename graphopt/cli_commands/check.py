"""Run a pipeline on a model and hold the result to budgets, for CI: exit 1 when one is broken.

Each budget is measured against the original model:
  --min-sqnr DB             SQNR of every output (worst one counts), on seeded random inputs
                            (--samples sets from --seed) or on --inputs FILE.npz
  --max-abs-diff X          largest absolute output difference on the same inputs
  --max-accuracy-drop PTS   top-1 accuracy lost on --accuracy DATASET (digits), in percentage points
  --max-latency-ms MS       median latency of the optimized model built by TVM for --target, run here
A table shows each budget, what was measured and by how much it was kept or broken;
--junit writes one JUnit testcase per budget (atomically) for the CI's test report.
Exit status: 0 when every budget is kept, 1 when one is broken or the run fails.

Examples:
  graphopt check digits.onnx -p 'fold-bn,quantize' --min-sqnr 20 --max-accuracy-drop 1 --accuracy digits
  graphopt check model.onnx -p @int8.pipeline --max-latency-ms 5 --target x86 --junit check.xml
"""

from __future__ import annotations

import argparse

from graphopt.cli_commands.calibration import add_calib_argument
from graphopt.cli_commands.common import add_shape_arguments
from graphopt.cli_commands.pipeline_arg import PIPELINE_HELP

HELP = "run a pipeline and fail when SQNR, accuracy or latency budgets are broken (CI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="MODEL", help="ONNX model (or torch.export .pt2) to check")
    add_shape_arguments(parser)
    parser.add_argument("-p", "--pipeline", default=None, metavar="PIPELINE", help=PIPELINE_HELP)
    budgets = parser.add_argument_group("budgets (each measured against the original model)")
    budgets.add_argument("--min-sqnr", type=float, metavar="DB", help="lowest SQNR of any output, in dB")
    budgets.add_argument("--max-abs-diff", type=float, metavar="X", help="largest absolute output difference")
    budgets.add_argument(
        "--max-accuracy-drop", type=float, metavar="PTS", help="top-1 accuracy lost, in percentage points"
    )
    budgets.add_argument("--accuracy", metavar="DATASET", help="dataset for --max-accuracy-drop: digits")
    budgets.add_argument("--max-latency-ms", type=float, metavar="MS", help="median latency of the optimized model")
    budgets.add_argument("-t", "--target", help="TVM target preset for --max-latency-ms (e.g. x86)")
    parser.add_argument(
        "--inputs",
        metavar="FILE.npz",
        help="inputs for --min-sqnr/--max-abs-diff, in --calib's format (default: seeded random inputs)",
    )
    parser.add_argument("--samples", type=int, default=4, help="seeded input sets when no --inputs (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first random input set (default 0)")
    parser.add_argument("--junit", metavar="OUT.xml", help="write a JUnit XML report, one testcase per budget")
    parser.add_argument("--no-verify", action="store_true", help="skip the per-pass numerical check")
    add_calib_argument(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from graphopt.check import CheckReport, check_options
    from graphopt.cli_commands.common import load_model, shape_options
    from graphopt.cli_commands.pipeline_arg import parse_pipeline_argument
    from graphopt.errors import GraphoptError
    from graphopt.fileio import check_output_path

    progress = args.progress
    pipeline = parse_pipeline_argument(args.pipeline)  # bad options fail before the model is loaded
    check_options(
        args.min_sqnr, args.max_abs_diff, args.max_accuracy_drop, args.accuracy, args.max_latency_ms, args.target,
        args.samples,
    )  # fmt: skip
    if args.junit is not None:
        check_output_path(args.junit)
    try:
        graph = load_model(args.input, **shape_options(args))
        inputs = None
        if args.inputs is not None:
            inputs = _load_inputs(args.inputs, graph)
            progress.log(f"--inputs {args.inputs}: {len(inputs)} input sets")
        progress.log(f"running {len(pipeline)} passes")
        report = _check(args, graph, pipeline, inputs, progress)
    except (GraphoptError, OSError) as e:  # the CI still gets a report: one errored testcase
        if args.junit is not None:
            CheckReport(args.input, str(pipeline), (), error=str(e)).write_junit(args.junit)
        raise
    print(f"check of {args.input} after '{report.pipeline}'")
    print(report.table())
    if args.junit is not None:
        print(f"wrote {report.write_junit(args.junit)}")
    if not report.passed:
        print(f"graphopt: check failed: {report.failure_message()}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace, graph, pipeline, inputs, progress):
    from graphopt.check import check_model
    from graphopt.cli_commands.calibration import load_calibration
    from graphopt.cli_commands.common import warn

    return check_model(
        graph,
        pipeline,
        min_sqnr_db=args.min_sqnr,
        max_abs_diff=args.max_abs_diff,
        max_accuracy_drop=args.max_accuracy_drop,
        accuracy=args.accuracy,
        max_latency_ms=args.max_latency_ms,
        target=args.target,
        inputs=inputs,
        samples=args.samples,
        seed=args.seed,
        calibration=load_calibration(args, graph),
        verify=not args.no_verify,
        name=args.input,
        log=progress.log,
        notice=warn,
    )


def _load_inputs(path: str, graph) -> list:
    """--inputs FILE.npz, read as --calib is; its errors name --inputs."""
    from graphopt.errors import GraphoptError
    from graphopt.quant.calibration_data import load_calibration_npz

    try:
        return load_calibration_npz(path, graph).sets
    except GraphoptError as e:
        raise GraphoptError(str(e).replace(f"--calib '{path}'", f"--inputs '{path}'")) from None
