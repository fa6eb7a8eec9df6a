"""Latency of bundled models: torch eager, onnxruntime fp32, TVM untuned, TVM tuned.

Every (model, batch, contender) runs in a fresh process, so no runtime's thread
pool or allocator slows the next one, and reports its median latency, compile
time and peak resident memory; the table gives ratios to onnxruntime measured in
the same run on the same machine.

    python benchmarks/bench_backends.py                         # all models, batch 1 and 8
    python benchmarks/bench_backends.py --models mobilenet_v2 --batches 1 \
        --db out/tuning --tune-trials 64                        # tune (resumable), then measure

"tvm-tuned" builds with the MetaSchedule database in DB/<model>-b<batch>; with
--tune-trials N it first tunes up to N trials there (resuming earlier work), and
without a database it is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS = ("torch", "onnxruntime", "tvm", "tvm-tuned")


def _time_calls(fn, *, min_runs: int, max_runs: int, budget_s: float) -> list[float]:
    fn()  # warm-up
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def worker(model_name: str, batch: int, contender: str, db: str | None, trials: int, budget_s: float) -> dict:
    import numpy as np
    import torch

    from graphopt.models import get_model

    model, inputs = get_model(model_name, batch_size=batch, seed=0)
    arrays = [x.numpy() for x in inputs]
    with torch.no_grad():
        reference = model(*inputs).numpy()
    result: dict = {"compile_s": None, "tune_s": None}
    t0 = time.perf_counter()
    if contender == "torch":

        def call():
            with torch.no_grad():
                return model(*inputs).numpy()
    elif contender == "onnxruntime":
        import io

        import onnxruntime as ort

        buf = io.BytesIO()
        torch.onnx.export(model, inputs, buf, dynamo=False, opset_version=17)
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
        result["compile_s"] = time.perf_counter() - t0

        def call():
            return sess.run(None, feeds)[0]
    else:
        import graphopt.api as api
        from graphopt.backends.tvm.compiled import compile_graph
        from graphopt.backends.tvm.lower import lower_to_relax
        from graphopt.backends.tvm.targets import resolve_target
        from graphopt.backends.tvm.tuning import load_database, tune

        target = resolve_target("x86")
        graph, pipe = api.run_pipeline_on(api.import_model(model, inputs), None, verify=False)
        database = None
        if contender == "tvm-tuned":
            if db is None:
                return {"skipped": "no --db given"}
            work = Path(db) / f"{model_name}-b{batch}"
            if trials:
                t1 = time.perf_counter()
                tune(lower_to_relax(graph), target, work, trials, progress=None)
                result["tune_s"] = time.perf_counter() - t1
            database = load_database(work, target) if work.exists() else None
            if database is None:
                return {"skipped": f"no tuning database in {work}"}
        t1 = time.perf_counter()
        compiled = compile_graph(graph, target, database=database, pipeline=str(pipe))
        result["compile_s"] = time.perf_counter() - t1

        def call():
            return compiled(*arrays)

    out = np.asarray(call())
    result["max_abs_err"] = float(np.abs(out - reference).max())
    times = _time_calls(call, min_runs=3, max_runs=200, budget_s=budget_s)
    result.update(
        median_ms=statistics.median(times),
        runs=len(times),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def _run_worker(args, model: str, batch: int, contender: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        model,
        str(batch),
        contender,
        "--budget",
        str(args.budget),
        "--tune-trials",
        str(args.tune_trials),
    ]
    if args.db:
        cmd += ["--db", args.db]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:120]}
    return json.loads(lines[-1])


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,mobilenet_v2,vit_small")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--db", help="directory of tuning databases (one per model and batch)")
    p.add_argument("--tune-trials", type=int, default=0, help="tune this many trials before measuring")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timed runs per contender")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "BATCH", "CONTENDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        model, batch, contender = args.worker
        print(json.dumps(worker(model, int(batch), contender, args.db, args.tune_trials, args.budget)))
        return 0

    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; valid: {', '.join(CONTENDERS)}")
    print(
        f"# {os.uname().machine}, {os.cpu_count()} cores; median of timed runs "
        f"(budget {args.budget:g} s each); ratio = latency / onnxruntime latency",
        flush=True,
    )
    header = (
        "| model | batch | contender | median ms | x onnxruntime | compile s | tune s | peak RSS MB | max abs err |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rows = {c: _run_worker(args, model, batch, c) for c in contenders}
            base = rows.get("onnxruntime", {}).get("median_ms")
            for c, r in rows.items():
                if "median_ms" not in r:
                    print(f"| {model} | {batch} | {c} | {r.get('error') or r.get('skipped')} | | | | | |")
                    continue
                ratio = r["median_ms"] / base if base else None
                print(
                    f"| {model} | {batch} | {c} | {r['median_ms']:.2f} | {_fmt(ratio, '.2f')} | "
                    f"{_fmt(r['compile_s'], '.1f')} | {_fmt(r['tune_s'], '.0f')} | "
                    f"{r['peak_rss_mb']:.0f} | {r['max_abs_err']:.1e} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
