"""MetaSchedule tuning with a persistent, resumable database.

A tuning work dir (named by the user) holds:

- ``database_workload.json``, ``database_tuning_record.json``: MetaSchedule's
  JSON database, one JSON document per line. TVM appends and flushes each
  record as its batch of measurements completes, so a run killed (even with
  SIGKILL) loses at most the batch in flight (``num_trials_per_iter``).
- ``graphopt_tuning.json``: metadata: graphopt db format version, target
  fingerprint and JSON, TVM version.
- ``graphopt_seeds.json``: which records are the default schedules'
  (``tuning_seed``), with their measured times.
- ``logs/``: MetaSchedule's per-task logs (its INFO log; on the console only
  with ``verbose``). ``.lock``: held while tuning.

Seeding: before MetaSchedule searches a kernel, the kernel's default
schedule (graphopt's rule, what an untuned build runs) is measured and
committed as a record, so the search starts from it and has to beat it.
``load_database`` and ``tune`` return what a build applies: per kernel the
fastest record, only where it beats the default schedule
(``tuning_seed.winners``); a tuned build is never slower, kernel by kernel
as measured, than the untuned one.

Budget: ``trials`` (a trial count) and/or ``budget_minutes`` (wall time,
checked between measurement batches; the batch in flight finishes and is
kept). Seeds are not trials.

Resuming: ``trials`` is the budget for the model's tasks in this work dir,
not for one call. Every record of one of the model's tasks (failed
measurements included, seeds not) counts as one trial spent; a call spends only
``trials - spent`` more, and with ``max_trials_per_task`` a task gets at
most ``max_trials_per_task - its records`` more. Tuning again seeds the
search with the best records already there. A call whose budget is already
spent does no tuning.

A work dir belongs to one target: opening it for another target raises
``TuningDatabaseError`` (records are not checked against the target when
they are applied, so reusing them silently could apply x86 schedules to
ARM). A truncated last line (a kill mid-write) is dropped with a
``TuningDatabaseWarning`` and the file rewritten; any other malformed line
raises ``TuningDatabaseError`` naming the file and line.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.target import Target

from graphopt.errors import GraphoptError

from .kernel_nodes import describe_nodes, legalize_with_nodes
from .targets import (
    TargetSpec,
    host_cores,
    resolve_target,
    target_fingerprint,
    target_is_cross,
)
from .task_scheduler import CommitEachBatch
from .tuning_seed import Seed, mean_ms, read_seeds, seed_database, winners, workload_key

__all__ = [
    "RPCConfig",
    "TaskProgress",
    "TuningDatabaseError",
    "TuningDatabaseWarning",
    "TuningError",
    "load_database",
    "print_progress",
    "tune",
]

FORMAT_VERSION = 1
METADATA_FILE = "graphopt_tuning.json"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LOCK_FILE = ".lock"
_MS_LOGGER = "tvm.s_tir.meta_schedule"


class TuningError(GraphoptError, ValueError):
    """Tuning cannot run as asked (e.g. a cross target measured locally)."""


class TuningDatabaseError(GraphoptError, RuntimeError):
    """A tuning work dir that cannot be used: corrupt, another target, busy."""


class TuningDatabaseWarning(UserWarning):
    """A tuning database was repaired (a truncated last line dropped)."""


@dataclass(frozen=True)
class RPCConfig:
    """Measure on the devices registered with a TVM RPC tracker under ``tracker_key``."""

    tracker_host: str
    tracker_port: int
    tracker_key: str
    session_timeout_sec: float = 60.0
    session_priority: int = 1
    max_workers: int = 1  # measurements in flight: at most the devices behind the key


@dataclass(frozen=True)
class TaskProgress:
    """Where tuning stands after a batch of measurements of one task."""

    index: int  # 1-based
    num_tasks: int
    name: str
    trials: int  # this task's trials in the work dir, earlier runs included
    best_ms: float | None  # best measured latency of this task's kernel
    total_trials: int  # all tasks
    total_budget: int | None  # None: bounded by budget_minutes only
    nodes: tuple[str, ...] = ()  # the graph values (Relax bindings) this kernel computes
    weight: int = 1  # calls of this kernel in the model
    rule_ms: float | None = None  # the default schedule's measured latency
    elapsed_s: float = 0.0  # since this tuning call began
    eta_s: float | None = None  # until its budget (trials or minutes) is spent


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def print_progress(p: TaskProgress) -> None:
    """The default progress reporter: one line per batch, on stderr."""
    best = "-" if p.best_ms is None else f"{p.best_ms:.4g} ms"
    rule = "" if p.rule_ms is None else f" (default {p.rule_ms:.4g} ms)"
    where = describe_nodes(p.nodes) if p.nodes else p.name
    calls = f" x{p.weight}" if p.weight > 1 else ""
    budget = "" if p.total_budget is None else f"/{p.total_budget}"
    print(
        f"[tune {p.index}/{p.num_tasks} {_clock(p.elapsed_s)} elapsed, ETA {_clock(p.eta_s)}] "
        f"{where}{calls} [{p.name}]: {p.trials} trials, best {best}{rule} ({p.total_trials}{budget} trials)",
        file=sys.stderr,
        flush=True,
    )


# --- the work dir -----------------------------------------------------------


def _line_problem(line: str, check: Callable[[object], str | None]) -> str | None:
    try:
        return check(json.loads(line))
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err})"
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        return f"unreadable JSON ({err})"
    except RecursionError:
        return "JSON nested too deeply to read"


def _regular_file(path: Path) -> bool:
    """Whether `path` exists; anything but a regular file there is a corrupt database
    (reading a FIFO would block, a directory would raise a bare OSError)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise TuningDatabaseError(f"corrupt tuning database: {path} is not a regular file")
    return True


def _check_table(path: Path, check: Callable[[object], str | None]) -> int:
    """Check a JSON-lines table and return its number of entries.

    A bad last line (a write cut off by a kill) is dropped with a warning and
    the file rewritten, so that TVM can load it and append after it; a bad
    line before the last raises ``TuningDatabaseError``.
    """
    text = path.read_text(encoding="utf-8", errors="replace") if _regular_file(path) else ""
    if not text:
        return 0
    lines = text.split("\n")
    rewrite = lines[-1] != ""  # the file should end with a newline
    if not rewrite:
        lines.pop()
    for number, line in enumerate(lines, 1):
        problem = _line_problem(line, check)
        if problem is None:
            continue
        if number < len(lines):
            raise TuningDatabaseError(f"corrupt tuning database {path}, line {number}: {problem}")
        warnings.warn(
            f"{path}: dropping its last line ({len(line)} characters), cut off by a killed run? ({problem})",
            TuningDatabaseWarning,
            stacklevel=4,
        )
        lines.pop()
        rewrite = True
    if rewrite:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, path)
    return len(lines)


def _check_workload(obj: object) -> str | None:
    ok = isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)
    return None if ok else "not a [hash, module] workload"


def _check_records(num_workloads: int) -> Callable[[object], str | None]:
    def check(obj: object) -> str | None:
        if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], list)):
            return "not a [workload index, record] entry"
        if not (isinstance(obj[0], int) and 0 <= obj[0] < num_workloads):
            return f"workload index {obj[0]!r} not in the {num_workloads} workloads"
        return None

    return check


def _metadata(target: Target) -> dict:
    return {
        "format": "graphopt-tuning",
        "version": FORMAT_VERSION,
        "target": target_fingerprint(target),
        "target_json": json.loads(str(target)),
        "tvm": tvm.__version__,
    }


def _check_metadata(work_dir: Path, target: Target) -> bool:
    """Check the work dir belongs to ``target``; False if it has no metadata yet."""
    path = work_dir / METADATA_FILE
    if not _regular_file(path):
        if (work_dir / RECORD_FILE).exists() and (work_dir / RECORD_FILE).stat().st_size:
            raise TuningDatabaseError(
                f"{work_dir} holds tuning records but no {METADATA_FILE}: not a graphopt "
                "tuning dir, or its metadata was removed; use an empty directory"
            )
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        version, fingerprint = meta["version"], meta["target"]
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON or UTF-8
        raise TuningDatabaseError(f"unreadable tuning metadata {path}: {err}") from None
    except RecursionError:
        raise TuningDatabaseError(f"unreadable tuning metadata {path}: JSON nested too deeply") from None
    if type(version) is not int or version < 1:
        raise TuningDatabaseError(
            f'corrupt tuning metadata {path}: "version" is {_brief(version)}, expected a positive integer'
        )
    if not isinstance(fingerprint, str):
        raise TuningDatabaseError(
            f'corrupt tuning metadata {path}: "target" is {_brief(fingerprint)}, expected a target fingerprint string'
        )
    if version > FORMAT_VERSION:
        raise TuningDatabaseError(f"{path}: db format version {version}, this graphopt reads up to {FORMAT_VERSION}")
    if fingerprint != target_fingerprint(target):
        raise TuningDatabaseError(
            f"{work_dir} was tuned for another target ({fingerprint}: "
            f"{_brief(meta.get('target_json'), 1000)}), not for {target_fingerprint(target)}: "
            f"{target}; use one work dir per target"
        )
    if meta.get("tvm") != tvm.__version__:
        warnings.warn(
            f"{work_dir} was tuned with TVM {meta.get('tvm')}, this is TVM {tvm.__version__}",
            TuningDatabaseWarning,
            stacklevel=3,
        )
    return True


def _brief(value: object, limit: int = 40) -> str:
    """`value` as JSON for a message, cut at `limit` characters (too deep: its type)."""
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError, TypeError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open_database(work_dir: Path) -> ms.database.JSONDatabase:
    workloads = _check_table(work_dir / WORKLOAD_FILE, _check_workload)
    _check_table(work_dir / RECORD_FILE, _check_records(workloads))
    try:
        return ms.database.JSONDatabase(str(work_dir / WORKLOAD_FILE), str(work_dir / RECORD_FILE), allow_missing=True)
    except Exception as err:  # TVM's own parse errors name the line
        raise TuningDatabaseError(f"TVM cannot load the tuning database in {work_dir}: {err}") from err


@contextmanager
def _locked(work_dir: Path, exclusive: bool) -> Iterator[None]:
    with open(work_dir / LOCK_FILE, "a", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuningDatabaseError(f"{work_dir} is in use by a tuning run") from None
        yield  # the lock goes with the file (and with the process, if killed)


def load_database(work_dir: str | os.PathLike, target: TargetSpec) -> ms.Database | None:
    """What a build applies from the tuning database in ``work_dir`` for ``target``.

    Per kernel the fastest record, only where it beats the default schedule
    (``tuning_seed.winners``); None if the work dir has no records at all.
    """
    work_dir, target = Path(work_dir), _tuning_target(target)
    if not work_dir.is_dir():
        return None
    with _locked(work_dir, exclusive=False):
        if not _check_metadata(work_dir, target):
            return None
        database = _open_database(work_dir)
        seeds = read_seeds(work_dir)
    return winners(database, seeds) if len(database) else None


# --- tuning -------------------------------------------------------------------


@dataclass
class _Task:
    extracted: ms.ExtractedTask
    nodes: tuple[str, ...] = ()
    trials: int = 0  # records in the database (seeds not), then + measured by this run
    best_ms: float | None = None
    rule_ms: float | None = None

    @property
    def name(self) -> str:
        return str(self.extracted.task_name)

    @property
    def mod(self) -> IRModule:
        return self.extracted.dispatched[0]  # what MetaSchedule records as the workload


_mean_ms = mean_ms


def _count_done(database: ms.Database, tasks: list[_Task], seeds: dict[str, Seed]) -> None:
    """Fill each task's trials (seeds not counted) and best latencies from the records in the database."""
    records = database.get_all_tuning_records()
    for task in tasks:
        key = workload_key(task.mod)
        rule = [s.ms for s in seeds.values() if s.workload == key]
        task.rule_ms = min(rule, default=None)
        if not database.has_workload(task.mod):
            continue
        workload = database.commit_workload(task.mod)  # the stored one
        mine = [r for r in records if r.workload.same_as(workload)]
        task.trials = max(0, len(mine) - len(rule))
        times = [t for t in (_mean_ms(r.run_secs) for r in mine) if t is not None]
        task.best_ms = min(times, default=None)


@dataclass
class _Clock:
    """Wall time of one tuning call: its start, the trials it began with, its deadline."""

    start: float
    trials_at_start: int
    budget: int | None
    deadline: float | None

    def eta(self, total_trials: int) -> float | None:
        now = time.monotonic()
        etas = [] if self.deadline is None else [max(0.0, self.deadline - now)]
        done = total_trials - self.trials_at_start
        if self.budget is not None and done > 0:
            etas.append((now - self.start) / done * max(0, self.budget - total_trials))
        return min(etas, default=None)


@derived_object
class _Progress(PyMeasureCallback):
    """Counts trials per task and reports after each batch."""

    def __init__(self, tasks: list[_Task], group: list[int], report, clock: _Clock):
        super().__init__()
        self.tasks, self.group, self.report, self.clock = tasks, group, report, clock

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        index = self.group[task_id]
        task = self.tasks[index]
        task.trials += len(runner_results)
        for result in runner_results:
            if result.error_msg is None and result.run_secs is not None:
                latency = _mean_ms(result.run_secs)
                if latency is not None and (task.best_ms is None or latency < task.best_ms):
                    task.best_ms = latency
        if self.report is not None:
            self.report(_progress(self.tasks, index, self.clock))


def _progress(tasks: list[_Task], index: int, clock: _Clock) -> TaskProgress:
    task = tasks[index]
    total = sum(t.trials for t in tasks)
    return TaskProgress(
        index=index + 1,
        num_tasks=len(tasks),
        name=task.name,
        trials=task.trials,
        best_ms=task.best_ms,
        total_trials=total,
        total_budget=clock.budget,
        nodes=task.nodes,
        weight=int(task.extracted.weight),
        rule_ms=task.rule_ms,
        elapsed_s=time.monotonic() - clock.start,
        eta_s=clock.eta(total),
    )


def _tuning_target(spec: TargetSpec) -> Target:
    """The target as tuned and recorded: MetaSchedule needs ``num-cores`` on CPU
    targets, and one that runs on this host gets this host's."""
    target = resolve_target(spec)
    if target.kind.name != "llvm" or target.attrs.get("num-cores") or target_is_cross(target):
        return target
    return Target({**json.loads(str(target)), "num-cores": host_cores()})


def build_candidate(mod: IRModule, target: Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default candidate build, less its ``import tvm.s_tir.tensor_intrin``.

    That import parses ~500 TVMScript intrinsics (over a minute on a busy
    2-core machine) in every builder worker of every batch. Candidates arrive
    as scheduled TIR with any intrinsic already substituted, so their build
    does not need the intrinsic registry.
    """
    # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


def export_shared(rt_mod: tvm.runtime.Module, compiler: str) -> str:
    """Export a candidate as a shared library linked by ``compiler`` (cross builds)."""
    # pylint: disable=import-outside-toplevel
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path


def _builder(target: Target, timeout_sec: float) -> ms.builder.Builder:
    export = None  # MetaSchedule's default: a .tar that the runner side links
    if target.kind.name == "llvm" and target_is_cross(target) and target.attrs.get("mtriple"):
        export = functools.partial(export_shared, compiler=f"{target.attrs['mtriple']}-g++")
    return ms.builder.LocalBuilder(
        max_workers=os.cpu_count() or 1,
        timeout_sec=timeout_sec,
        f_build=build_candidate,
        f_export=export,
    )


def _check_runner(runner: str | RPCConfig, target: Target) -> None:
    if isinstance(runner, RPCConfig):
        return
    if runner != "local":
        raise TuningError(f"runner is 'local' or an RPCConfig, not {runner!r}")
    if target_is_cross(target):
        raise TuningError(
            f"code for {target} cannot run on this host: measure it on a device "
            "through an RPC tracker (runner=RPCConfig(...))"
        )


def _fill_from_host(tensor) -> None:
    """Fill a (remote) tensor with random data made here and copied over."""
    # pylint: disable=import-outside-toplevel
    import numpy as np

    shape, dtype = tuple(tensor.shape), str(tensor.dtype)
    rng = np.random.default_rng()
    if np.dtype(dtype).kind == "f":
        data = rng.uniform(-1.0, 1.0, shape).astype(dtype)
    else:  # integers and bools: zeros, valid as indices into any input
        data = np.zeros(shape, dtype)
    tensor.copyfrom(data)


def alloc_measure_args(session, device, args_info, alloc_repeat):
    """RPCRunner's argument allocation that also serves runtime-only servers.

    MetaSchedule fills the kernel arguments with the device's
    ``tvm.contrib.random.random_fill_for_measure``, which a server that
    loaded only TVM's runtime library (such as the emulated aarch64 server)
    lacks; there the data is made here and copied to the device instead.
    """
    # pylint: disable=import-outside-toplevel
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    try:
        fill = session.get_function("tvm.contrib.random.random_fill_for_measure")
    except AttributeError:
        fill = _fill_from_host
    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _runner(runner: str | RPCConfig, timeout_sec: float) -> ms.runner.Runner:
    if isinstance(runner, RPCConfig):
        config = ms.runner.RPCConfig(
            tracker_host=runner.tracker_host,
            tracker_port=runner.tracker_port,
            tracker_key=runner.tracker_key,
            session_priority=runner.session_priority,
            session_timeout_sec=runner.session_timeout_sec,
        )
        return ms.runner.RPCRunner(config, f_alloc_argument=alloc_measure_args, max_workers=runner.max_workers)
    return ms.runner.LocalRunner(timeout_sec=timeout_sec)


def _extract_tasks(mod: IRModule, target: Target) -> list[_Task]:
    legal, nodes = legalize_with_nodes(mod, target)
    extracted = ms.relax_integration.extract_tasks(legal, target)
    return [
        _Task(t, nodes.get(str(t.task_name), ())) for t in extracted if not t.mod.attrs.get("tirx.is_scheduled", False)
    ]


def _tune_contexts(tasks: list[_Task], work_dir: Path, seed, verbose) -> list[ms.TuneContext]:
    """One TuneContext per task. The first in a process imports TVM's tensor intrinsics (slow)."""
    # MetaSchedule rebuilds its logging config from the names of the handlers on
    # its logger; a handler it did not create (unnamed) makes that crash, so drop it.
    ms_logger = logging.getLogger(_MS_LOGGER)
    for handler in list(ms_logger.handlers):
        if not (handler.get_name() or "").startswith(_MS_LOGGER):
            ms_logger.removeHandler(handler)
    with _ms_console(verbose):
        contexts, _ = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [t.extracted for t in tasks], str(work_dir), seed=seed
        )
    return contexts


@contextmanager
def _ms_console(verbose: bool) -> Iterator[None]:
    """Around a MetaSchedule call that (re)configures its loggers: files under work_dir/logs get
    everything; its console handler shows warnings only unless verbose, on stderr (stdout is for results)."""
    # the console handler takes the logger's level and "ext://sys.stdout" when it is made
    logging.getLogger(_MS_LOGGER).setLevel(logging.INFO if verbose else logging.WARNING)
    # the scheduler's own INFO lines (which task it picks) still reach its file under logs/
    logging.getLogger(_MS_LOGGER + ".task_scheduler").setLevel(logging.INFO)
    with redirect_stdout(sys.stderr):
        yield


def _plan(tasks: list[_Task], per_task: int | None, budget: int) -> list[tuple[int, list[int]]]:
    """Tasks still to tune, grouped by what each may still spend: [(cap, task indices)].

    One MetaSchedule run takes one per-task cap, so after an interrupted run
    the partly tuned tasks form groups of their own.
    """
    if per_task is None:
        return [(budget, list(range(len(tasks))))] if tasks else []
    caps: dict[int, list[int]] = {}
    for i, task in enumerate(tasks):
        if per_task - task.trials > 0:
            caps.setdefault(per_task - task.trials, []).append(i)
    return sorted(caps.items(), reverse=True)


UNBOUNDED_TRIALS = 1_000_000  # the trial budget when only budget_minutes bounds a run


def tune(
    mod: IRModule,
    target: TargetSpec,
    work_dir: str | os.PathLike,
    trials: int | None = None,
    *,
    budget_minutes: float | None = None,
    runner: str | RPCConfig = "local",
    progress: Callable[[TaskProgress], None] | None = print_progress,
    max_trials_per_task: int | None = None,
    num_trials_per_iter: int = 16,
    seed: int | None = None,
    timeout_sec: float = 120.0,
    verbose: bool = False,
) -> ms.Database:
    """Tune the kernels of ``mod`` for ``target``, keeping records in ``work_dir``.

    ``trials`` is the total budget for this model in this work dir; records
    already there count toward it (see the module docstring).
    ``budget_minutes`` stops this call on wall time: checked between
    measurement batches, so it ends within one batch of the deadline, every
    finished record kept; a later call resumes. Give either or both.
    Every kernel's default schedule is measured and recorded first (once per
    work dir), and tuned records are applied only where they beat it.
    Returns what a build applies (``tuning_seed.winners``), ready for
    ``schedule.build(mod, target, database)``.
    ``progress`` is called first for each task that already has records,
    then after every batch of measurements (None: silent; the default
    prints one line per batch on stderr).
    ``timeout_sec`` bounds one candidate's build and one local measurement
    (a busy machine needs more than MetaSchedule's default 30 s).
    ``verbose`` shows MetaSchedule's own log on the console; it is always
    written to ``work_dir/logs``.
    """
    start = time.monotonic()
    _check_budget(trials, budget_minutes, max_trials_per_task)
    deadline = None if budget_minutes is None else start + 60.0 * budget_minutes
    budget = UNBOUNDED_TRIALS if trials is None else trials
    target = _tuning_target(target)
    if target.kind.name == "llvm" and not target.attrs.get("num-cores"):
        raise TuningError(
            "tuning a CPU target other than this host needs its core count: "
            "add 'num-cores' to the target dict (the arm presets carry one)"
        )
    _check_runner(runner, target)
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise TuningError(f"the tuning database '{work_dir}' is not a directory")
    work_dir.mkdir(parents=True, exist_ok=True)
    with _locked(work_dir, exclusive=True):
        if not _check_metadata(work_dir, target):
            (work_dir / METADATA_FILE).write_text(json.dumps(_metadata(target), indent=1) + "\n")
        database = _open_database(work_dir)
        tasks = _extract_tasks(mod, target)
        seeds = read_seeds(work_dir)
        _count_done(database, tasks, seeds)
        clock = _Clock(start, sum(t.trials for t in tasks), trials, deadline)
        if progress is not None:
            for i, task in enumerate(tasks):
                if task.trials:
                    progress(_progress(tasks, i, clock))
        plan = _plan(tasks, max_trials_per_task, budget)
        if not plan or sum(t.trials for t in tasks) >= budget or _past(deadline):
            return winners(database, seeds)
        builder = _builder(target, timeout_sec)
        measure = _runner(runner, timeout_sec)
        seeds = seed_database([(t.name, t.mod) for t in tasks], target, database, builder, measure, work_dir)
        _count_done(database, tasks, seeds)
        if _past(deadline):  # seeding took the whole budget
            return winners(database, seeds)
        contexts = _tune_contexts(tasks, work_dir, seed, verbose)
        for cap, group in plan:
            # round robin from the kernel that costs the model most (default latency x calls),
            # so a short budget goes where it can gain most
            group = sorted(group, key=lambda i: -(tasks[i].rule_ms or 0.0) * float(tasks[i].extracted.weight))
            remaining = budget - sum(t.trials for t in tasks)
            if remaining <= 0 or _past(deadline):
                break
            # MetaSchedule gives tasks their first round in order: a budget smaller than
            # tasks x rounds would leave the later kernels untuned (naive loops), so
            # shrink the round until every task of the group gets one.
            per_iter = max(1, min(num_trials_per_iter, remaining // len(group)))
            with _ms_console(verbose):
                ms.tune.tune_tasks(
                    tasks=[contexts[i] for i in group],
                    task_weights=[float(tasks[i].extracted.weight) for i in group],
                    work_dir=str(work_dir),
                    max_trials_global=min(remaining, cap * len(group)),
                    max_trials_per_task=min(remaining, cap),
                    num_trials_per_iter=per_iter,
                    task_scheduler=CommitEachBatch(deadline),  # every finished batch is on disk
                    builder=builder,
                    runner=measure,
                    database=database,
                    measure_callbacks=[
                        *ms.MeasureCallback.create("default"),
                        _Progress(tasks, group, progress, clock),
                    ],
                )
    return winners(database, seeds)


def _check_budget(trials: int | None, budget_minutes: float | None, max_trials_per_task: int | None) -> None:
    if trials is None and budget_minutes is None:
        raise TuningError("give a budget: trials=N and/or budget_minutes=M")
    if (trials is not None and trials < 0) or (max_trials_per_task is not None and max_trials_per_task < 1):
        raise TuningError("trials must be >= 0 and max_trials_per_task >= 1")
    if budget_minutes is not None and not budget_minutes > 0:
        raise TuningError(f"budget_minutes must be > 0, got {budget_minutes}")


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
