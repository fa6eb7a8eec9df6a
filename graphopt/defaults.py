"""Defaults shared by the API and the CLI (kept import-light for fast `--help`)."""

# The exact cleanups run when no pipeline is named; compression passes are opt-in.
DEFAULT_PIPELINE = "fold-bn,fold-constants,eliminate-identity,eliminate-dead-code"
DEFAULT_TARGET = "x86"
