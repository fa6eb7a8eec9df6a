"""Seeding MetaSchedule with graphopt's default schedules, and picking what a build applies.

Before MetaSchedule searches a kernel, the kernel's default schedule (the
rule ``schedule.default_rules`` picks, the schedule an untuned build gets)
is measured with the same builder and runner and committed to the database
as an ordinary record. Its trace also enters MetaSchedule's initial
population (the evolutionary search starts from the database's best
records). The work dir's ``graphopt_seeds.json`` names those records
(workload structural hash + trace digest) with the rule's measured time.

A build applies ``winners(database, seeds)``: per kernel, the fastest
record, and only where that record is not a seed. Where the default
schedule measured fastest the kernel gets no record and the build schedules
it with the current rules, so tuning never makes a kernel slower than the
untuned build (as measured), and a later, better rule is not overridden by
the trace of an older one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tvm_ffi
from tvm import s_tir
from tvm.ir import IRModule
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from graphopt.fileio import atomic_write_text

from .schedule import default_rules

__all__ = ["SEEDS_FILE", "Seed", "read_seeds", "rule_schedule", "seed_database", "winners", "workload_key"]

SEEDS_FILE = "graphopt_seeds.json"
FAILED_SECS = 1e9  # MetaSchedule records a failed measurement as 1e10 s

log = logging.getLogger("graphopt.backends.tvm.tuning")


@dataclass(frozen=True)
class Seed:
    """One kernel's default schedule as measured: the record the tuned ones must beat."""

    workload: str  # workload_key of the kernel
    trace: str  # trace_digest of the rule's schedule
    kernel: str
    ms: float

    @property
    def key(self) -> str:
        return f"{self.workload}-{self.trace}"


def workload_key(mod: IRModule) -> str:
    """A stable id of a tuning workload (its structural hash), as hex."""
    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def trace_digest(trace: s_tir.schedule.Trace) -> str:
    """A stable id of a schedule trace: a hash of its printed form."""
    return hashlib.sha256(str(trace).encode()).hexdigest()[:16]


def record_key(record: ms.database.TuningRecord) -> str:
    return f"{workload_key(record.workload.mod)}-{trace_digest(record.trace)}"


def mean_ms(run_secs: Sequence | None) -> float | None:
    """A record's mean latency in ms; None for a failed or missing measurement."""
    secs = [float(s) for s in run_secs or ()]
    mean = sum(secs) / len(secs) if secs else 1e10
    return None if mean >= FAILED_SECS else mean * 1e3


def read_seeds(work_dir: Path) -> dict[str, Seed]:
    """The seeds named in ``work_dir/graphopt_seeds.json``, by key; none when it is absent."""
    path = Path(work_dir) / SEEDS_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["seeds"]
        seeds = [Seed(**entry) for entry in entries]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        from .tuning import TuningDatabaseError  # pylint: disable=import-outside-toplevel

        raise TuningDatabaseError(f"corrupt seed file {path}: {err}") from None
    return {s.key: s for s in seeds}


def _write_seeds(work_dir: Path, seeds: dict[str, Seed]) -> None:
    entries = [vars(s) for s in sorted(seeds.values(), key=lambda s: s.key)]
    atomic_write_text(work_dir / SEEDS_FILE, json.dumps({"version": 1, "seeds": entries}, indent=1) + "\n")


def rule_schedule(mod: IRModule, target: Target) -> tuple[s_tir.Schedule, str] | None:
    """The default schedule of a one-kernel workload and the rule's name; None when no rule applies."""
    func = mod["main"]
    with target:
        for rule in default_rules(target):
            sch = rule.apply(func, target, False)
            if isinstance(sch, list):  # dlight rules may return several
                sch = sch[0] if sch else None
            if sch is not None:
                return sch, getattr(rule, "name", type(rule).__name__)
    return None


@dataclass
class _Pending:
    mod: IRModule
    kernel: str
    sch: s_tir.Schedule
    args_info: list


def seed_database(
    tasks: Sequence[tuple[str, IRModule]],
    target: Target,
    database: ms.Database,
    builder: ms.builder.Builder,
    runner: ms.runner.Runner,
    work_dir: Path,
) -> dict[str, Seed]:
    """Measure and commit the default schedule of every (name, workload) not seeded yet; return all seeds.

    A kernel whose default schedule fails to build or run is left unseeded
    (one log line); its tuned records then compete only with each other.
    """
    seeds = read_seeds(work_dir)
    known = {s.key for s in seeds.values()}
    pending = []
    for name, mod in tasks:
        found = rule_schedule(mod, target)
        if found is None:
            continue
        sch = found[0]
        if f"{workload_key(mod)}-{trace_digest(sch.trace)}" in known:
            continue
        args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        pending.append(_Pending(mod, name, sch, args_info))
    if not pending:
        return seeds
    built = builder.build([ms.builder.BuilderInput(p.sch.mod, target) for p in pending])
    measurable = [(p, b) for p, b in zip(pending, built) if b.error_msg is None]
    for p, b in zip(pending, built):
        if b.error_msg is not None:
            log.warning("default schedule of kernel %s does not build: %s", p.kernel, b.error_msg.splitlines()[-1])
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    inputs = [ms.runner.RunnerInput(b.artifact_path, device, p.args_info) for p, b in measurable]
    results = [future.result() for future in runner.run(inputs)] if inputs else []
    for (p, b), result in zip(measurable, results):
        shutil.rmtree(Path(b.artifact_path).parent, ignore_errors=True)
        latency = mean_ms(result.run_secs) if result.error_msg is None else None
        if latency is None:
            log.warning("default schedule of kernel %s failed to run: %s", p.kernel, result.error_msg)
            continue
        workload = database.commit_workload(p.mod)
        record = ms.database.TuningRecord(
            p.sch.trace, workload, [float(s) for s in result.run_secs], target, p.args_info
        )
        database.commit_tuning_record(record)
        seed = Seed(workload_key(p.mod), trace_digest(p.sch.trace), p.kernel, latency)
        seeds[seed.key] = seed
    _write_seeds(work_dir, seeds)  # after the records: a kill in between only re-measures a seed
    return seeds


def best_records(database: ms.Database) -> list[ms.database.TuningRecord]:
    """The fastest successful record of every workload in ``database``."""
    best: dict[str, tuple[float, ms.database.TuningRecord]] = {}
    hashes: dict[int, str] = {}  # records of one workload share its object: hash it once
    for record in database.get_all_tuning_records():
        latency = mean_ms(record.run_secs)
        if latency is None:
            continue
        handle = record.workload.__chandle__()
        key = hashes.get(handle) or hashes.setdefault(handle, workload_key(record.workload.mod))
        if key not in best or latency < best[key][0]:
            best[key] = (latency, record)
    return [record for _, record in best.values()]


def winners(database: ms.Database, seeds: dict[str, Seed]) -> ms.database.MemoryDatabase:
    """What a build applies: per kernel, the fastest record, unless that is the default schedule's seed."""
    out = ms.database.MemoryDatabase()
    for record in best_records(database):
        if record_key(record) in seeds:
            continue
        workload = out.commit_workload(record.workload.mod)
        out.commit_tuning_record(
            ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
        )
    return out
