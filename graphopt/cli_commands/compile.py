"""Compile an ONNX model with TVM for a target and save the library.

Runs the pipeline (default: the exact cleanups), lowers to Relax, applies a
tuning database if --db names one (after tuning --tune N trials into it, if
asked), builds, and writes OUT (.so for the host, .tar or .so for a cross
target) plus OUT.json with the metadata. Nothing is written on failure. OUT,
the target and --db are checked before the build: --db must name a tuning
directory (it may be missing only with --tune); one without records warns that
the build is untuned.

Examples:
  graphopt compile model.onnx --target x86 -o model.so
  graphopt compile model.onnx --target arm -o model.tar -p 'fold-bn,eliminate-dead-code'
  graphopt compile model.onnx --target x86 -o model.so --tune 64 --db tuning/
"""

from __future__ import annotations

import argparse

from graphopt.cli_commands.calibration import add_calib_argument, load_calibration
from graphopt.cli_commands.common import add_shape_arguments
from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_PIPELINE_NAME, DEFAULT_TARGET

HELP = "compile an ONNX model with TVM for x86, arm or cuda and save it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="model to compile")
    add_shape_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="library to write (.so or .tar)")
    add_target_arguments(parser)
    parser.add_argument(
        "--tune", type=int, default=0, metavar="N", help="MetaSchedule trials to run first (needs --db)"
    )
    parser.add_argument("--db", metavar="DIR", help="tuning database directory (created, resumed, reused)")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t",
        "--target",
        default=DEFAULT_TARGET,
        help="preset (x86, arm, arm-dotprod, cuda, cuda-sm80, cuda-sm90) or a TVM "
        f"target dict as JSON (default: {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "-p",
        "--pipeline",
        default=None,
        metavar="PIPELINE",
        help=f"pass pipeline (default: '{DEFAULT_PIPELINE_NAME}', i.e. {DEFAULT_PIPELINE}; '' for none)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the per-pass numerical check")
    add_calib_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphopt.api import optimize
    from graphopt.backends.tvm.compiled import check_library_toolchain
    from graphopt.cli_commands.common import load_model, shape_options, warn

    progress = args.progress
    check_library_path(args.output)  # bad options fail here, before the long build
    check_library_toolchain(args.output, args.target)  # the target too, and its cross compiler for a .so
    _check_db(args)
    graph = load_model(args.input, **shape_options(args))
    calibration = load_calibration(args, graph)
    with progress.step(f"compiling for {args.target}"):
        compiled = optimize(
            graph,
            target=args.target,
            pipeline=args.pipeline,
            tune=args.tune,
            db=args.db,
            verify=not args.no_verify,
            log=progress.log,
            calibration=calibration,
            notice=warn,
        )
    path = compiled.save(args.output)
    print(f"wrote {path} ({compiled!r})")
    if compiled.comparison is not None:
        progress.log(f"before/after the pipeline:\n{compiled.comparison.table()}")
    return 0


def check_library_path(output: str) -> None:
    """Refuse an output the build could not be saved to: wrong suffix, or not a regular file."""
    from graphopt.backends.tvm.compiled import LIBRARY_SUFFIXES, metadata_path
    from graphopt.errors import GraphoptError
    from graphopt.fileio import check_output_path

    path = check_output_path(output)
    if path.suffix not in LIBRARY_SUFFIXES:
        raise GraphoptError(f"-o '{output}': use a .so (loadable shared library) or .tar (object files) path")
    check_output_path(metadata_path(path))


def _check_db(args: argparse.Namespace) -> None:
    """--db names a tuning directory: refuse a file or a typo; warn when it holds nothing to apply."""
    from pathlib import Path

    from graphopt.backends.tvm.tuning import RECORD_FILE
    from graphopt.cli_commands.common import warn
    from graphopt.errors import GraphoptError

    if args.tune < 0:
        raise GraphoptError(f"--tune wants a number of trials >= 0, got {args.tune}")
    if args.db is None:
        return
    db = Path(args.db)
    if db.exists() and not db.is_dir():
        raise GraphoptError(
            f"--db '{db}' is not a directory: a tuning database is the directory 'graphopt tune --db DIR' writes"
        )
    if args.tune:
        return  # tuning creates or resumes it
    if not db.exists():
        raise GraphoptError(
            f"--db '{db}': no such directory; tune into it first ('graphopt tune "
            f"--db {db}' or 'compile --tune N --db {db}')"
        )
    records = db / RECORD_FILE
    if not (records.is_file() and records.stat().st_size):
        warn(f"--db '{db}' holds no tuning records: building with the default schedules (untuned)")
