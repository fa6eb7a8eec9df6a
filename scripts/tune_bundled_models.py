"""Tune the bundled benchmark models for a target preset and write the shipped tuning files.

Each model (batch 1, the default pipeline, as ``graphopt.optimize`` builds
it) is tuned with MetaSchedule seeded by graphopt's default schedules for
``--minutes`` of wall time into ``WORK/<model>-<target>/`` (resumable: a
rerun continues). The records that beat the default schedules, and still do
when measured again against them, alternately (``export_shipped``), are
written to ``graphopt/backends/tvm/tuned/<model>-<target>.json.gz``, which
``graphopt compile`` / ``graphopt.optimize`` apply when no --db is given and
the workload and target match. The budget counts from the start of tuning
(seeding included; TVM's one-time intrinsic import not). The load average
before and after each model is printed and stored in the file's note:
measurements on a busy machine are noisy, so retune on an idle one.

    python scripts/tune_bundled_models.py --minutes 4
    python scripts/tune_bundled_models.py --models resnet18 --minutes 10 --work build/tuning
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "mobilenet_v2", "vit_small", "bert_small")


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def tune_model(name: str, target: str, minutes: float, work: Path, out_dir: Path) -> None:
    # pylint: disable=import-outside-toplevel
    from graphopt.api import import_model, run_pipeline_on
    from graphopt.backends.tvm.lower import lower_to_relax
    from graphopt.backends.tvm.shipped import export_shipped
    from graphopt.backends.tvm.tuning import tune
    from graphopt.models import get_model

    model, inputs = get_model(name, batch_size=1, seed=0)
    graph, _ = run_pipeline_on(import_model(model, inputs), None, example_inputs=inputs, verify=False)
    before = _load()
    print(f"== {name}: {minutes:g} min for {target} ({before})", file=sys.stderr, flush=True)
    start = time.monotonic()
    tune(lower_to_relax(graph), target, work / f"{name}-{target}", budget_minutes=minutes)
    took = (time.monotonic() - start) / 60
    after = _load()
    note = f"seeded MetaSchedule, {minutes:g} min budget ({took:.1f} min with seeding); {before} before, {after} after"
    out = out_dir / f"{name}-{target}.json.gz"
    count = export_shipped(work / f"{name}-{target}", out, model=name, target=target, note=note)
    print(f"   {out.relative_to(ROOT)}: {count} kernels beat the default schedules ({after})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default: {','.join(MODELS)})")
    parser.add_argument("--target", default="x86", help="target preset (default: x86)")
    parser.add_argument("--minutes", type=float, default=4.0, help="tuning budget per model (default 4)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "tuning", help="tuning work dirs")
    parser.add_argument("--out", type=Path, default=ROOT / "graphopt" / "backends" / "tvm" / "tuned")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # MetaSchedule imports every TVM tensor intrinsic once per process (minutes on a busy
    # 2-core machine); do it before the first model's clock starts, so each gets its budget.
    import tvm.s_tir.tensor_intrin  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    for name in args.models.split(","):
        tune_model(name.strip(), args.target, args.minutes, args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
