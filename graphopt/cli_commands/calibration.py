"""`--calib FILE.npz` for the commands that run pipelines (opt, save, compile, tune)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


def add_calib_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calib",
        metavar="FILE.npz",
        help="calibration data for passes that calibrate (quantize, correct-bias, ...): one array per graph "
        "input, named after it (or input_0, input_1, ...), samples along a leading axis [N, *input shape] "
        "or rows [N, *input shape[1:]] taken in batches; without it they calibrate on seeded random inputs",
    )


def load_calibration(args: argparse.Namespace, graph: "Graph") -> list | None:
    """The calibration sets of --calib for `graph` (None without --calib), reported on stderr."""
    if args.calib is None:
        return None
    from graphopt.cli_commands.common import warn
    from graphopt.quant.calibration_data import load_calibration_npz

    data = load_calibration_npz(args.calib, graph)
    for note in data.notes:
        warn(note)
    args.progress.log(f"--calib {args.calib}: {data.describe()}")
    return data.sets
