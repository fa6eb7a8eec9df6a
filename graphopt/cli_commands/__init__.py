"""Subcommands of the `graphopt` CLI, one module each.

A command module defines `HELP` (one line for `graphopt --help`), a module
docstring (its `--help` description), `add_arguments(parser)` and
`run(args) -> int`. `run` reads `args.progress` (a `common.Progress`) for
progress lines on stderr, prints results on stdout, and raises GraphoptError
(or OSError) for bad input; the CLI turns those into one message and exit 1.
Keep module-level imports light: heavy ones (torch, onnx) belong in `run`.

To add a command, write its module and list its name here.
"""

COMMANDS: tuple[str, ...] = ("passes", "opt", "save", "show", "compile", "tune", "demo", "check", "report", "reduce")
