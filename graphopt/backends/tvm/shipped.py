"""Tuning records shipped with graphopt for its bundled benchmark models.

``tuned/<model>-<preset>.json.gz`` (package data) holds, per kernel of one
model, the tuned record that beat graphopt's default schedule, from a
seeded tuning run (``tuning_seed``) on the machine named in the file.
``scripts/tune_bundled_models.py`` writes them (``export_shipped``).

A build given no tuning database uses them (``shipped_database``): a kernel
gets a shipped record when its workload (structural hash of the TIR kernel)
is in a file tuned for the same target (``target_fingerprint``: kind, mcpu,
cores, ...). Records of a file tuned for another target are never applied;
where they would have matched, one note says so.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.database import PyDatabase
from tvm.target import Target

from graphopt.fileio import atomic_write_bytes

from .targets import TargetSpec, target_fingerprint
from .tuning_seed import best_records, mean_ms, read_seeds, record_key, workload_key

__all__ = ["SHIPPED_DIR", "ShippedDatabase", "ShippedFile", "export_shipped", "shipped_database", "shipped_files"]

SHIPPED_DIR = "tuned"  # under graphopt/backends/tvm/
FORMAT = "graphopt-shipped-tuning"
FORMAT_VERSION = 1

log = logging.getLogger("graphopt.backends.tvm.shipped")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: read once, cached by file
class ShippedFile:
    """One shipped file: its model, the target it was tuned for, and its (workload, record) JSON lines."""

    name: str
    model: str
    target: str  # target_fingerprint
    target_json: dict
    note: str  # how it was made: budget, machine
    entries: tuple[tuple[str, str], ...] = field(repr=False)  # (workload line, record line)


def export_shipped(
    work_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str,
    target: TargetSpec,
    note: str = "",
    confirm_rounds: int = 3,
) -> int:
    """Write the winning records of a seeded tuning work dir as a shipped file; returns their number.

    Each winner is measured again against its kernel's default schedule,
    alternating, ``confirm_rounds`` times (a measurement on a busy machine
    favours kernels that use fewer threads); it ships only if its median is
    still faster.
    """
    # pylint: disable=import-outside-toplevel
    from .tuning import _open_database, _tuning_target, load_database

    target = _tuning_target(target)
    database = load_database(work_dir, target)
    if database is None:
        raise ValueError(f"{work_dir} holds no tuning records to ship")
    if confirm_rounds:
        database = _confirmed(
            database, _open_database(Path(work_dir)), read_seeds(Path(work_dir)), target, confirm_rounds
        )
    with tempfile.TemporaryDirectory() as tmp:
        paths = Path(tmp, "w.json"), Path(tmp, "r.json")
        dump = ms.database.JSONDatabase(str(paths[0]), str(paths[1]), allow_missing=True)
        for record in best_records(database):
            workload = dump.commit_workload(record.workload.mod)
            dump.commit_tuning_record(
                ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
            )
        workloads = paths[0].read_text().splitlines()
        records = [json.loads(line) for line in paths[1].read_text().splitlines()]
    entries = [[workloads[index], json.dumps(record)] for index, record in records]
    body = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model,
        "target": target_fingerprint(target),
        "target_json": json.loads(str(target)),
        "note": note,
        "entries": entries,
    }
    atomic_write_bytes(out, gzip.compress(json.dumps(body).encode(), mtime=0))
    return len(entries)


def _confirmed(
    winners_db: ms.Database, records: ms.Database, seeds: dict, target: Target, rounds: int
) -> ms.database.MemoryDatabase:
    """The winners that stay faster than their default schedule when both are measured again, alternately."""
    # pylint: disable=import-outside-toplevel
    import statistics

    from tvm import s_tir

    from .tuning import _builder, _runner

    seed_of = {}
    for record in records.get_all_tuning_records():
        if record_key(record) in seeds:
            seed_of[workload_key(record.workload.mod)] = record
    builder, runner = _builder(target, 120.0), _runner("local", 120.0)
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    kept = ms.database.MemoryDatabase()
    for winner in winners_db.get_all_tuning_records():
        seed = seed_of.get(workload_key(winner.workload.mod))
        pair = [winner] if seed is None else [winner, seed]
        times: list[list[float]] = [[] for _ in pair]
        for _ in range(rounds if seed is not None else 0):
            mods = []
            for record in pair:
                sch = s_tir.Schedule(record.workload.mod)
                record.trace.apply_to_schedule(sch, remove_postproc=False)
                mods.append(sch.mod)
            built = builder.build([ms.builder.BuilderInput(m, target) for m in mods])
            inputs = [ms.runner.RunnerInput(b.artifact_path, device, r.args_info) for b, r in zip(built, pair)]
            for slot, future in enumerate(runner.run(inputs)):
                result = future.result()
                times[slot].append(mean_ms(result.run_secs) or float("inf"))
        if seed is not None and statistics.median(times[0]) >= statistics.median(times[1]):
            log.warning("record for %s not faster when measured again: dropped", winner.workload.mod.get_global_vars())
            continue
        workload = kept.commit_workload(winner.workload.mod)
        kept.commit_tuning_record(
            ms.database.TuningRecord(winner.trace, workload, winner.run_secs, winner.target, winner.args_info)
        )
    return kept


def _read(name: str, data: bytes) -> ShippedFile | None:
    try:
        body = json.loads(gzip.decompress(data))
        if body.get("format") != FORMAT or body.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} file of version <= {FORMAT_VERSION}")
        entries = tuple((str(w), str(r)) for w, r in body["entries"])
        return ShippedFile(name, body["model"], body["target"], body["target_json"], body.get("note", ""), entries)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("shipped tuning file %s is unreadable, ignored: %s", name, err)
        return None


@functools.cache
def shipped_files() -> tuple[ShippedFile, ...]:
    """The shipped tuning files (read once per process)."""
    folder = resources.files("graphopt.backends.tvm").joinpath(SHIPPED_DIR)
    if not folder.is_dir():
        return ()
    found = (_read(entry.name, entry.read_bytes()) for entry in sorted(folder.iterdir(), key=lambda e: e.name))
    return tuple(f for f in found if f is not None and f.name.endswith(".json.gz"))


@functools.cache
def _records(file: ShippedFile) -> tuple[tuple[ms.database.Workload, ms.database.TuningRecord], ...]:
    out = []
    for workload_line, record_line in file.entries:
        workload = ms.database.Workload.from_json(json.loads(workload_line))
        out.append((workload, ms.database.TuningRecord.from_json(json.loads(record_line), workload)))
    return tuple(out)


@functools.cache
def _workload_keys(file: ShippedFile) -> frozenset[str]:
    return frozenset(workload_key(w.mod) for w, _ in _records(file))


def _describe(target_json: dict) -> str:
    keys = ("kind", "mtriple", "mcpu", "num-cores")
    return " ".join(f"{k}={target_json[k]}" for k in keys if k in target_json)


@derived_object
class ShippedDatabase(PyDatabase):
    """The shipped records for one target, that notes which kernels it served.

    Kernels whose workload is only in files for other targets are counted
    as ``foreign``: the build schedules them with the default rules.
    """

    def __init__(self, target: Target, files: tuple[ShippedFile, ...]):
        super().__init__()
        self.inner = ms.database.MemoryDatabase()
        self.mine = [f for f in files if f.target == target_fingerprint(target)]
        self.others = [f for f in files if f not in self.mine]
        self.target = target
        self.used: list[str] = []
        self.used_models: set[str] = set()
        self.foreign: list[str] = []
        for file in self.mine:
            for workload, record in _records(file):
                stored = self.inner.commit_workload(workload.mod)
                self.inner.commit_tuning_record(
                    ms.database.TuningRecord(record.trace, stored, record.run_secs, record.target, record.args_info)
                )

    def _note(self, mod: IRModule, name: str | None, found: bool) -> None:
        if found:
            self.used.append(str(name))
            self.used_models.update(f.model for f in self.mine if workload_key(mod) in _workload_keys(f))
        elif any(workload_key(mod) in _workload_keys(f) for f in self.others):
            self.foreign.append(str(name))

    def has_workload(self, mod):
        return self.inner.has_workload(mod)

    def commit_workload(self, mod):
        return self.inner.commit_workload(mod)

    def commit_tuning_record(self, record):
        self.inner.commit_tuning_record(record)

    def get_top_k(self, workload, top_k):
        return self.inner.get_top_k(workload, top_k)

    def get_all_tuning_records(self):
        return self.inner.get_all_tuning_records()

    def query_tuning_record(self, mod, target, workload_name=None):
        record = self.inner.query_tuning_record(mod, target, workload_name)
        self._note(mod, workload_name, record is not None)
        return record

    def query_schedule(self, mod, target, workload_name=None):
        sch = self.inner.query_schedule(mod, target, workload_name)
        self._note(mod, workload_name, sch is not None)
        return sch

    def query_ir_module(self, mod, target, workload_name=None):
        found = self.inner.query_ir_module(mod, target, workload_name)
        self._note(mod, workload_name, found is not None)
        return found

    def __len__(self) -> int:
        return len(self.inner)

    def report(self, log_line: Callable[[str], None] | None, notice: Callable[[str], None] | None) -> None:
        """After a build: one line naming what was applied, or why matching records were not."""
        if self.used:
            models = ", ".join(sorted(self.used_models))
            (log_line or log.info)(
                f"shipped tuning records ({models}, {_describe(self.mine[0].target_json)}) "
                f"applied to {len(self.used)} kernels"
            )
        elif self.foreign:
            file = next(f for f in self.others if f.entries)
            (notice or log.warning)(
                f"shipped tuning records match {len(self.foreign)} kernels of this model but were tuned for "
                f"{_describe(file.target_json)}, not {_describe(json.loads(str(self.target)))}: ignored "
                f"(default schedules; 'graphopt tune' tunes for this target)"
            )


def shipped_database(target: TargetSpec) -> ShippedDatabase | None:
    """The shipped records as a database for ``target`` (see the module docstring); None if none are shipped."""
    # pylint: disable=import-outside-toplevel
    from .tuning import _tuning_target

    files = shipped_files()
    if not files:
        return None
    return ShippedDatabase(_tuning_target(target), files)
