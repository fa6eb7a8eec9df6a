"""Helpers shared by CLI commands: progress lines, model loading, summaries."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from graphopt.errors import FrontendError, GraphoptError

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


class Progress:
    """Progress lines on stderr (results go to stdout); silent when disabled."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr

    def log(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Announce a long step, then report how long it took."""
        self.log(f"{label} ...")
        start = time.perf_counter()
        yield
        self.log(f"  done in {time.perf_counter() - start:.1f} s")


def warn(message: str) -> None:
    """A warning on stderr, shown even with -q: something was done other than asked."""
    print(f"graphopt: warning: {message}", file=sys.stderr, flush=True)


def add_shape_arguments(parser) -> None:
    """--input-shape NAME:DIMS (repeatable) and --dynamic-batch, for commands that import a model."""
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="shape of input NAME, e.g. x:1x3x224x224 (static) or x:Nx3x224x224 (batch N chosen at run time); "
        "repeatable",
    )
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="make axis 0 of every input a symbol N (one build, any batch)"
    )


def shape_options(args) -> dict:
    """load_model's keyword arguments from --input-shape / --dynamic-batch (absent options: none)."""
    from graphopt.shapes import parse_input_shapes

    return {
        "input_shapes": parse_input_shapes(getattr(args, "input_shape", None)),
        "dynamic_batch": bool(getattr(args, "dynamic_batch", False)),
    }


def load_model(path: str | os.PathLike, *, input_shapes=None, dynamic_batch: bool = False) -> "Graph":
    """Import an ONNX file (or a torch.export .pt2 file); every failure is a GraphoptError or OSError naming
    the file, with a hint for torch checkpoints (.pt, .pth), which hold weights but no graph.
    input_shapes / dynamic_batch: see `graphopt.shapes` (ONNX files only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not an ONNX file", str(path))
    if path.suffix == ".pt2":
        if input_shapes or dynamic_batch:
            raise FrontendError(
                f"'{path}': a torch.export program's shapes are fixed when it is exported; export it with "
                f"dynamic_shapes=... (torch.export.Dim) instead of --input-shape/--dynamic-batch"
            )
        return _load_exported_program(path)
    if path.suffix in TORCH_SUFFIXES or _is_zip(path):
        raise FrontendError(
            f"'{path}' is not an ONNX file: export it with torch.onnx.export or "
            f"graphopt.trace(model, (x,)).save_onnx(path), or save a torch.export program as .pt2"
        )
    from graphopt.frontends.onnx import load_onnx

    try:
        return load_onnx(path, input_shapes=input_shapes, dynamic_batch=dynamic_batch)
    except GraphoptError as e:
        if str(path) in str(e) or path.name in str(e):
            raise
        raise FrontendError(f"cannot import ONNX model '{path}': {e}") from e
    except (OSError, MemoryError):
        raise
    except Exception as e:  # decoder or checker failures the frontend did not wrap
        raise FrontendError(f"cannot import ONNX model '{path}': {type(e).__name__}: {e}") from e


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin", ".safetensors")  # weights, not graphs


def _is_zip(path: Path) -> bool:
    """torch.save writes a zip archive; an ONNX file never starts with the zip magic."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _load_exported_program(path: Path) -> "Graph":
    """A .pt2 file written by torch.export.save, imported through the torch frontend."""
    import torch

    from graphopt.frontends.fx import import_exported

    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise FrontendError(f"cannot load torch.export program '{path}': {type(e).__name__}: {e}") from e
    return import_exported(ep, name=path.stem)


def summary(graph: "Graph") -> str:
    """One line: node, parameter and op counts."""
    ops = " ".join(f"{op}={n}" for op, n in graph.op_counts().items())
    return (
        f"graph {graph.name}: {len(graph.nodes)} nodes, {graph.num_parameters():,} parameters "
        f"in {len(graph.params)} tensors; ops: {ops or 'none'}"
    )


def op_count_table(before: "Graph", after: "Graph") -> str:
    """Op counts side by side, with the change, one op per row."""
    b, a = before.op_counts(), after.op_counts()
    rows = [("op", "before", "after", "change")]
    for op in sorted(set(b) | set(a)):
        delta = a.get(op, 0) - b.get(op, 0)
        rows.append((op, str(b.get(op, 0)), str(a.get(op, 0)), f"{delta:+d}" if delta else ""))
    rows.append(("total", str(len(before.nodes)), str(len(after.nodes)), f"{len(after.nodes) - len(before.nodes):+d}"))
    return format_table(rows)


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Left-align the first column, right-align the others."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
