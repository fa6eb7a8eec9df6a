"""Tuning seeded with graphopt's default schedules, wall-time budgets, progress lines, shipped records.

Which schedule a build picks is checked structurally (the kernel a build
applies is the default schedule, or a record measured faster than it), not
by timing. The model is one linear layer; tuning spends a few trials.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm.s_tir import meta_schedule as ms  # noqa: E402

import graphopt  # noqa: E402
from graphopt.backends.tvm.lower import lower_to_relax  # noqa: E402
from graphopt.backends.tvm.schedule import apply_database, apply_default_schedules, legalize  # noqa: E402
from graphopt.backends.tvm.shipped import shipped_database, shipped_files  # noqa: E402
from graphopt.backends.tvm.targets import target_fingerprint  # noqa: E402
from graphopt.backends.tvm.tuning import RECORD_FILE, TuningError, _tuning_target, load_database, tune  # noqa: E402
from graphopt.backends.tvm.tuning_seed import (  # noqa: E402
    SEEDS_FILE,
    mean_ms,
    read_seeds,
    record_key,
    rule_schedule,
    trace_digest,
    winners,
    workload_key,
)

TRIALS = 4
FAST = {"num_trials_per_iter": TRIALS, "seed": 0}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 32)

    def forward(self, x):
        return torch.relu(self.fc(x))


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return graphopt.trace(Tiny().eval(), (torch.randn(4, 64),))


@pytest.fixture(scope="module")
def seeded(graph, tmp_path_factory):
    """A work dir tuned once with TRIALS trials after seeding, and its progress reports."""
    mod, work_dir, events = lower_to_relax(graph), tmp_path_factory.mktemp("seeded"), []
    tune(mod, "x86", work_dir, TRIALS, progress=events.append, **FAST)
    return mod, work_dir, events


def kernels(mod) -> dict[str, tvm.tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def task_mods(mod):
    return [t.dispatched[0] for t in ms.relax_integration.extract_tasks(legalize(mod, "x86"), _tuning_target("x86"))]


def test_default_schedule_is_recorded_first_and_is_not_a_trial(seeded):
    mod, work_dir, events = seeded
    seeds = read_seeds(work_dir)
    target = _tuning_target("x86")
    expected = set()
    for task in task_mods(mod):
        sch, _ = rule_schedule(task, target)
        expected.add(f"{workload_key(task)}-{trace_digest(sch.trace)}")
    assert set(seeds) == expected and seeds  # one seed per kernel: its default schedule
    records = ms.database.JSONDatabase(str(work_dir / "database_workload.json"), str(work_dir / RECORD_FILE))
    keys = [record_key(r) for r in records.get_all_tuning_records()]
    assert len(keys) == TRIALS + len(seeds) and expected <= set(keys)  # seeds are records, not trials
    assert events[-1].total_trials == TRIALS
    assert events[-1].rule_ms == pytest.approx(min(s.ms for s in seeds.values()))


def test_tiny_budget_build_is_never_slower_in_kind(seeded):
    """Per kernel the build applies the default schedule, or a record measured faster than it."""
    mod, work_dir, _ = seeded
    seeds = read_seeds(work_dir)
    records = ms.database.JSONDatabase(str(work_dir / "database_workload.json"), str(work_dir / RECORD_FILE))
    picked = load_database(work_dir, "x86")
    untuned = kernels(apply_default_schedules(legalize(mod, "x86"), "x86"))
    tuned = kernels(apply_default_schedules(apply_database(legalize(mod, "x86"), "x86", picked), "x86"))
    for task in task_mods(mod):
        mine = [r for r in records.get_all_tuning_records() if workload_key(r.workload.mod) == workload_key(task)]
        seed = next(r for r in mine if record_key(r) in seeds)
        best = min(mine, key=lambda r: mean_ms(r.run_secs) or float("inf"))
        name = next(n for n, f in untuned.items() if n in str(task.get_global_vars()) or len(untuned) == 1)
        if record_key(best) in seeds:  # nothing beat the default: the build runs the default schedule
            assert not picked.has_workload(task)
            tvm_ffi_equal(tuned[name], untuned[name])
        else:
            assert mean_ms(best.run_secs) < mean_ms(seed.run_secs)
            assert picked.has_workload(task)
            assert str(picked.query_tuning_record(task, _tuning_target("x86"), name).trace) == str(best.trace)


def tvm_ffi_equal(a, b) -> None:
    tvm.ir.assert_structural_equal(a.without_attr("global_symbol"), b.without_attr("global_symbol"))


def test_a_tuned_record_wins_only_when_measured_faster(seeded, tmp_path):
    """The same MetaSchedule record, recorded faster and then slower than the default schedule."""
    mod, work_dir, _ = seeded
    seeds = read_seeds(work_dir)
    source = ms.database.JSONDatabase(str(work_dir / "database_workload.json"), str(work_dir / RECORD_FILE))
    all_records = source.get_all_tuning_records()
    seed = next(r for r in all_records if record_key(r) in seeds)
    candidate = next(r for r in all_records if record_key(r) not in seeds and mean_ms(r.run_secs) is not None)
    seed_secs = [float(s) for s in seed.run_secs]
    for factor, wins in ((0.5, True), (2.0, False)):
        database = ms.database.MemoryDatabase()
        for record, secs in ((seed, seed_secs), (candidate, [s * factor for s in seed_secs])):
            workload = database.commit_workload(record.workload.mod)
            database.commit_tuning_record(
                ms.database.TuningRecord(record.trace, workload, secs, record.target, record.args_info)
            )
        picked = winners(database, seeds).get_all_tuning_records()
        assert [str(r.trace) for r in picked] == ([str(candidate.trace)] if wins else [])


def test_resume_does_not_measure_the_default_again(seeded, tmp_path):
    mod, work_dir, _ = seeded
    copy = Path(shutil.copytree(work_dir, tmp_path / "db"))
    before = (copy / SEEDS_FILE).read_text()
    tune(mod, "x86", copy, 2 * TRIALS, progress=None, **FAST)
    assert (copy / SEEDS_FILE).read_text() == before
    assert len((copy / RECORD_FILE).read_text().splitlines()) == 2 * TRIALS + len(read_seeds(copy))


@pytest.mark.slow
def test_budget_minutes_stops_on_wall_time_between_batches(seeded, tmp_path, capsys):
    """No trial limit: only the deadline ends the run; every batch it measured is kept whole."""
    mod, work_dir, _ = seeded
    copy = Path(shutil.copytree(work_dir, tmp_path / "db"))
    events, per_iter, minutes = [], 2, 0.5
    start = time.monotonic()
    tune(mod, "x86", copy, budget_minutes=minutes, progress=events.append, num_trials_per_iter=per_iter, seed=0)
    took = time.monotonic() - start
    assert took < 60 * minutes + 120  # the deadline, plus at most one batch in flight
    added = len((copy / RECORD_FILE).read_text().splitlines()) - TRIALS - len(read_seeds(copy))
    assert added % per_iter == 0  # whole batches
    measured = [e for e in events if e.total_trials > TRIALS]
    assert len(measured) == added // per_iter
    assert all(e.total_budget is None and e.eta_s is not None and e.eta_s <= 60 * minutes for e in measured)
    assert capsys.readouterr().out == ""  # MetaSchedule's log goes to work_dir/logs
    assert any((copy / "logs").iterdir())


def test_progress_line_on_stderr_names_the_graph_values(graph, seeded, tmp_path, capsys):
    mod, work_dir, _ = seeded
    copy = Path(shutil.copytree(work_dir, tmp_path / "db"))
    tune(mod, "x86", copy, TRIALS + 2, num_trials_per_iter=2, seed=0)  # the default progress printer
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("[tune ")]
    assert len(lines) == 2  # the resumed state, then one batch
    linear = next(n for n in graph.nodes if n.op == "linear").outputs[0]
    assert linear in lines[-1] and "elapsed, ETA" in lines[-1] and "default" in lines[-1]
    assert f"({TRIALS + 2}/{TRIALS + 2} trials)" in lines[-1]


def test_a_budget_is_required(graph, tmp_path):
    with pytest.raises(TuningError, match="budget"):
        tune(lower_to_relax(graph), "x86", tmp_path, None)
    with pytest.raises(TuningError, match="budget_minutes"):
        tune(lower_to_relax(graph), "x86", tmp_path, budget_minutes=0)


# --- shipped records ------------------------------------------------------------


def _shipped(model: str):
    files = [f for f in shipped_files() if f.model == model]
    if not files:
        pytest.fail(f"no shipped tuning file for {model}")
    if files[0].target != target_fingerprint(_tuning_target("x86")):
        pytest.skip(f"shipped records were tuned for another machine ({files[0].target_json.get('mcpu')})")
    return files[0]


def _served_model() -> str:
    """resnet18, or (where no resnet18 record beat its default schedule) another bundled model that has one."""
    usable = [f.model for f in shipped_files() if f.entries]
    name = next((m for m in ("resnet18", "mobilenet_v2", "vit_small", "bert_small") if m in usable), None)
    if name is None:
        pytest.fail("no shipped record at all: rerun scripts/tune_bundled_models.py")
    return name


@pytest.fixture(scope="module")
def served():
    from graphopt.api import import_model, run_pipeline_on
    from graphopt.models import get_model

    name = _served_model()
    model, inputs = get_model(name, batch_size=1, seed=0)
    graph, _ = run_pipeline_on(import_model(model, inputs), None, example_inputs=inputs, verify=False)
    return name, lower_to_relax(graph)


def test_resnet18_on_x86_picks_up_the_shipped_records(served):
    name, mod = served
    _shipped(name)
    database, lines = shipped_database("x86"), []
    scheduled = apply_database(legalize(mod, "x86"), "x86", database)
    applied = [n for n, f in kernels(scheduled).items() if f.attrs.get("tirx.is_scheduled", False)]
    assert applied and len(database.used) == len(applied)
    database.report(lines.append, lines.append)
    assert len(lines) == 1 and name in lines[0] and f"applied to {len(applied)} kernels" in lines[0]


def test_another_target_ignores_them_with_one_note(served):
    name, resnet18_kernels = served
    shipped = _shipped(name)
    other = {**shipped.target_json, "mcpu": "skylake-avx512"}
    database, notes, lines = shipped_database(other), [], []
    scheduled = apply_database(legalize(resnet18_kernels, other), other, database)
    assert not [n for n, f in kernels(scheduled).items() if f.attrs.get("tirx.is_scheduled", False)]
    database.report(lines.append, notes.append)
    assert not lines and len(notes) == 1
    assert "tuned for" in notes[0] and "skylake-avx512" in notes[0] and "ignored" in notes[0]


@pytest.mark.slow
def test_optimize_without_db_logs_the_shipped_records():
    """End to end through graphopt.optimize, on the smallest bundled model some shipped record serves."""
    from graphopt.models import get_model

    name = _served_model()
    _shipped(name)
    model, inputs = get_model(name, batch_size=1, seed=0)
    lines = []
    compiled = graphopt.optimize(model, inputs, target="x86", verify=False, log=lines.append)
    assert any(line.startswith(f"shipped tuning records ({name}") for line in lines), lines
    with torch.no_grad():
        expected = model(*inputs).numpy()
    assert abs(compiled(inputs[0].numpy()) - expected).max() < 1e-3


def test_shipped_files_are_small_and_listed_as_package_data():
    files = sorted(Path(graphopt.__file__).parent.joinpath("backends/tvm/tuned").glob("*.json.gz"))
    assert {f.name for f in files} >= {f"{m}-x86.json.gz" for m in ("resnet18", "vit_small")}
    assert sum(f.stat().st_size for f in files) < 4 * 2**20
    pyproject = (Path(graphopt.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"graphopt.backends.tvm" = ["tuned/*.json.gz"]' in pyproject
    assert any(file.entries for file in shipped_files())
    for file in shipped_files():
        assert all(json.loads(record) for _, record in file.entries)
