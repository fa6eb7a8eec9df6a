"""The `graphopt` command line, in the style of mlir-opt.

    graphopt passes [NAME ...]                       the pass registry
    graphopt opt [-p PIPELINE] in.onnx -o out.onnx   run a pipeline (default: the cleanups) on a model
    graphopt show model.onnx                         print a model's IR
    graphopt demo [--model NAME]                     the end-to-end tour on a bundled model

Each subcommand lives in `graphopt/cli_commands/<name>.py`; `COMMANDS` there
lists them. Results go to stdout, progress to stderr. Errors are one message
on stderr and exit status 1 (2 for usage errors); `--traceback` shows the
Python traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from graphopt import __version__
from graphopt.cli_commands import COMMANDS
from graphopt.cli_commands.common import Progress
from graphopt.errors import GraphoptError
from graphopt.progress import set_progress
from graphopt.verbosity import set_verbose

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphopt",
        description="A compiler for neural-network compression: ONNX/PyTorch model -> one IR -> "
        "rewrite passes -> ONNX/torch/TVM.",
        epilog="Run 'graphopt COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    _add_global_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"graphopt.cli_commands.{name.replace('-', '_')}")
        # The same flags are accepted after the subcommand; SUPPRESS keeps the value given before it.
        # One parent per command: "resolve" (a command may redefine a global flag, e.g. tune's -v)
        # edits the parent's actions, which must not be shared with other commands.
        common = argparse.ArgumentParser(add_help=False)
        _add_global_options(common, default=argparse.SUPPRESS)
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            conflict_handler="resolve",
        )
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.run)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=default,
        help="on error, show the Python traceback instead of one message",
    )
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress output on stderr")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="show TVM's own output and INFO logs on stderr"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, usage errors exit 2
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.progress = Progress(enabled=not args.quiet)
    set_verbose(args.verbose)  # else TVM's own output goes to graphopt.verbosity.log_file()
    set_progress(False if args.quiet else None)  # bars: never with -q, else only on a terminal
    try:
        return args.handler(args) or EXIT_OK
    except KeyboardInterrupt:
        print("graphopt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `graphopt show m.onnx | head`: stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (GraphoptError, OSError) as e:
        return _fail(args, _message(e))
    except Exception as e:  # a bug, not bad input: still one line unless asked
        return _fail(args, f"internal error: {type(e).__name__}: {e} (rerun with --traceback for details)")


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.strerror}: '{e.filename}'"
    return str(e)


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.traceback:
        traceback.print_exc()
    else:
        print(f"graphopt: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
