"""The `-p` argument of the CLI: pipeline text, 'default', or `@FILE` holding the text.

A pipeline file is the same MLIR-style text, spread over lines as the writer
likes; lines whose first non-blank character is `#` are comments:

    # examples/int8.pipeline
    fold-bn, eliminate-dead-code,
    quantize{dtype=int8 calibrate=percentile}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from graphopt.errors import GraphoptError, PipelineParseError

if TYPE_CHECKING:
    from graphopt.passes import Pipeline

PIPELINE_HELP = "pass pipeline text, e.g. 'fold-bn,eliminate-dead-code', 'default', or @FILE holding the text"


def pipeline_argument_text(arg: str | None) -> str | None:
    """The pipeline text `arg` names: `@path` is read from that file (comments dropped, lines joined)."""
    if arg is None or not arg.startswith("@"):
        return arg
    path = Path(arg[1:])
    if not arg[1:]:
        raise GraphoptError("-p @FILE needs a file name after '@'")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GraphoptError(f"pipeline file '{path}' is not UTF-8 text: {e}") from None
    lines = [line.strip() for line in raw.splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("#"))
    if not text:
        raise GraphoptError(f"pipeline file '{path}' holds no passes (only blank or '#' comment lines)")
    return text


def parse_pipeline_argument(arg: str | None) -> "Pipeline":
    """The Pipeline for a `-p` value; a file's parse error names the file."""
    from graphopt.defaults import pipeline_text
    from graphopt.passes import Pipeline

    text = pipeline_argument_text(arg)
    try:
        return Pipeline.parse(pipeline_text(text))
    except PipelineParseError as e:
        if arg is not None and arg.startswith("@"):
            raise GraphoptError(f"in pipeline file '{arg[1:]}' (comment lines dropped, lines joined): {e}") from None
        raise
