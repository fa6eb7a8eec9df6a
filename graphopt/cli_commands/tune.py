"""Tune an ONNX model's kernels with MetaSchedule into a database directory.

Records are appended as they are measured, so a killed run loses no finished
record; running again resumes and spends only the remaining trials. `graphopt
compile --db DIR` reuses the database. With --rpc-tracker, candidates are
measured on the devices registered with a TVM RPC tracker under --rpc-key
(e.g. several boards, or emulated aarch64 servers), --rpc-workers of them at
a time, so tuning scales out. scripts/tune_over_rpc.sh shows it end to end.

Every kernel's default schedule (graphopt's rule) is measured and recorded
first, and a build applies a tuned record only where it beat that, so tuning
never makes a kernel slower than the untuned build. --budget-minutes stops on
wall time (between measurement batches; finished records kept, a rerun
resumes). One progress line per batch on stderr names the graph values a
kernel computes; MetaSchedule's own log is in DIR/logs (global -v shows it).

Examples:
  graphopt tune model.onnx --target x86 --db tuning/ --trials 256
  graphopt tune model.onnx --target x86 --db tuning/ --budget-minutes 10
  graphopt tune model.onnx --target arm --db tuning-arm/ --trials 64 \\
      --rpc-tracker 127.0.0.1:9190 --rpc-key aarch64 --rpc-workers 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from graphopt.cli_commands.common import add_shape_arguments
from graphopt.cli_commands.compile import add_target_arguments

HELP = "tune a model's kernels with MetaSchedule (resumable database)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="model to tune")
    add_shape_arguments(parser)
    parser.add_argument("--db", required=True, metavar="DIR", help="tuning database directory")
    parser.add_argument("--trials", type=int, metavar="N", help="total trial budget (records already in DIR count)")
    parser.add_argument(
        "--budget-minutes", type=float, metavar="M", help="stop after M minutes of wall time (with or without --trials)"
    )
    add_target_arguments(parser)
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure through this RPC tracker")
    parser.add_argument("--rpc-key", default=None, metavar="KEY", help="device key at the tracker")
    parser.add_argument(
        "--rpc-workers",
        type=int,
        default=1,
        metavar="N",
        help="measurements in flight, up to the devices under the key (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    from graphopt.api import run_pipeline_on
    from graphopt.backends.tvm.lower import lower_to_relax
    from graphopt.backends.tvm.targets import resolve_target
    from graphopt.backends.tvm.tuning import RPCConfig, print_progress, tune
    from graphopt.cli_commands.calibration import load_calibration
    from graphopt.cli_commands.common import load_model, shape_options, warn
    from graphopt.errors import GraphoptError

    target = resolve_target(args.target)
    if args.trials is None and args.budget_minutes is None:
        raise GraphoptError("give a budget: --trials N and/or --budget-minutes M")
    if args.trials is not None and args.trials < 0:
        raise GraphoptError(f"--trials wants a number >= 0, got {args.trials}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        raise GraphoptError(f"--budget-minutes wants a number > 0, got {args.budget_minutes}")
    if Path(args.db).exists() and not Path(args.db).is_dir():  # before the pipeline and lowering
        raise GraphoptError(f"--db '{args.db}' is not a directory")
    runner = "local"
    if args.rpc_tracker:
        host, _, port = args.rpc_tracker.rpartition(":")
        if not host or not port.isdigit() or not args.rpc_key:
            raise GraphoptError(
                f"--rpc-tracker wants HOST:PORT and --rpc-key KEY, got '{args.rpc_tracker}' and {args.rpc_key!r}"
            )
        if args.rpc_workers < 1:
            raise GraphoptError(f"--rpc-workers must be >= 1, got {args.rpc_workers}")
        runner = RPCConfig(host, int(port), args.rpc_key, max_workers=args.rpc_workers)
    graph = load_model(args.input, **shape_options(args))
    graph, _ = run_pipeline_on(
        graph,
        args.pipeline,
        verify=not args.no_verify,
        log=args.progress.log,
        calibration=load_calibration(args, graph),
        notice=warn,
    )
    budget = " and ".join(
        b
        for b in (
            args.trials is not None and f"{args.trials} trials",
            args.budget_minutes and f"{args.budget_minutes:g} min",
        )
        if b
    )
    progress = print_progress if args.progress.enabled else None
    with args.progress.step(f"tuning ({budget}) for {target.kind.name} into {args.db}"):
        tune(
            lower_to_relax(graph),
            target,
            args.db,
            args.trials,
            budget_minutes=args.budget_minutes,
            runner=runner,
            progress=progress,
            verbose=args.verbose,
        )
    print(
        f"tuning records in {args.db}; build with: graphopt compile {args.input} "
        f"--target {args.target} --db {args.db} -o OUT"
    )
    return 0
