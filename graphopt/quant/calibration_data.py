"""Calibration data from a .npz file, and a PassContext that says when there is none.

`load_calibration_npz(path, graph)` reads one array per graph input, named like
the input (or `input_0`, `input_1`, ... in graph-input order), and splits it
into calibration sets along its leading axis:
- an array of rank r + 1 for an input of rank r is a stack of samples: each
  sample `a[i]` (the input's full shape) is one set;
- an array of the input's rank is a run of rows: consecutive batches of the
  input's static batch size (1 when the batch dim is symbolic) are the sets; a
  remainder too short for one batch is left out, and `notes` say so.
Every input must give the same number of sets. Names, ranks, static dims and
dtypes are checked against the graph; a mismatch, an empty file or an array
with no samples is a `CalibrationError` naming the file, the array and what
the graph expects.

`NoticingContext` is a PassContext that calls `notice` once, the first time a
pass asks for calibration sets when none were given (so the pass calibrates on
seeded random inputs).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.passes.context import PassContext
from graphopt.quant.calibrate import CalibrationError

RANDOM_CALIBRATION_NOTICE = (
    "no calibration data given (--calib FILE.npz): calibrating on seeded random inputs, which rarely match real data"
)


@dataclass(frozen=True)
class CalibrationData:
    sets: list[list[np.ndarray]]  # each in graph-input order
    samples: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{len(self.sets)} calibration sets ({self.samples} samples)"


def load_calibration_npz(path: str | os.PathLike, graph: Graph) -> CalibrationData:
    """The calibration sets in `path` (.npz) for `graph`'s inputs; CalibrationError on any mismatch."""
    where = f"--calib '{os.fspath(path)}'"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise
        raise CalibrationError(f"{where} is not a readable .npz file ({e})") from None
    if not arrays:
        raise CalibrationError(f"{where} holds no arrays: the calibration set is empty")
    wanted = _input_names(arrays, graph, where)
    per_input, notes = [], []
    for name, key in zip(graph.inputs, wanted):
        batches, note = _split(arrays[key], graph, name, key, where)
        per_input.append(batches)
        if note:
            notes.append(note)
    counts = {key: len(b) for key, b in zip(wanted, per_input)}
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"'{k}': {n}" for k, n in counts.items())
        raise CalibrationError(f"{where}: the arrays give different numbers of calibration sets ({listed})")
    sets = [list(group) for group in zip(*per_input)]
    samples = sum(s[0].shape[0] if s[0].ndim else 1 for s in sets)
    return CalibrationData(sets, samples, tuple(notes))


def _input_names(arrays: dict[str, np.ndarray], graph: Graph, where: str) -> list[str]:
    """The array key for each graph input: its own name, or input_<i>."""
    by_name, by_index = list(graph.inputs), [f"input_{i}" for i in range(len(graph.inputs))]
    for keys in (by_name, by_index):
        if set(arrays) == set(keys):
            return keys
    expected = ", ".join(f"'{n}'" for n in by_name)
    got = ", ".join(f"'{k}'" for k in arrays)
    missing = [n for n in by_name if n not in arrays]
    extra = [k for k in arrays if k not in by_name]
    raise CalibrationError(
        f"{where} holds arrays {got}; the graph's inputs are {expected} (name the arrays after them, or "
        f"input_0..input_{len(by_name) - 1} in that order): missing {missing}" + (f", unknown {extra}" if extra else "")
    )


def _split(a: np.ndarray, graph: Graph, name: str, key: str, where: str) -> tuple[list[np.ndarray], str | None]:
    t = graph.type_of(name)
    dims = list(t.shape)
    expect = f"{t.dtype}{dims}"
    label = f"{where}, array '{key}' (graph input '{name}')"

    def fits(shape, want) -> bool:
        return len(shape) == len(want) and all(not isinstance(w, int) or w == s for s, w in zip(shape, want))

    if a.dtype != np.dtype(t.dtype):
        raise CalibrationError(
            f"{label} has dtype {a.dtype}; the graph expects {expect} (save it as {t.dtype}: .astype(np.{t.dtype}))"
        )
    if a.ndim and a.shape[0] == 0:
        raise CalibrationError(f"{label} has no samples (shape {list(a.shape)}): the calibration set is empty")
    if a.ndim == len(dims) + 1 and fits(a.shape[1:], dims):
        return [a[i] for i in range(a.shape[0])], None
    if dims and a.ndim == len(dims) and fits(a.shape[1:], dims[1:]):
        batch = dims[0] if isinstance(dims[0], int) else 1
        count = a.shape[0] // batch
        if count == 0:
            raise CalibrationError(
                f"{label} has {a.shape[0]} rows, fewer than one batch of {batch}: the calibration set is empty"
            )
        left = a.shape[0] - count * batch
        note = f"{label}: {left} rows left out (not a whole batch of {batch})" if left else None
        return [a[i * batch : (i + 1) * batch] for i in range(count)], note
    raise CalibrationError(
        f"{label} has shape {list(a.shape)}; the graph expects {expect}: give a stack of samples "
        f"[N, {', '.join(str(d) for d in dims)}]"
        + (f" or rows [N, {', '.join(str(d) for d in dims[1:])}]" if dims else "")
    )


@dataclass
class NoticingContext(PassContext):
    """A PassContext that calls `notice` once when a pass calibrates without calibration data."""

    notice: Callable[[str], None] | None = None
    _noticed: bool = field(default=False, init=False, repr=False)

    def calibration_sets(self, graph: Graph | None = None, count: int = 8) -> Iterator[list[np.ndarray]]:
        if self.calibration is None and self.notice is not None and not self._noticed:
            self._noticed = True
            self.notice(RANDOM_CALIBRATION_NOTICE)
        return super().calibration_sets(graph, count)
