"""Untuned graphopt (TVM, x86 preset, default CPU schedule rules) against onnxruntime fp32.

Each contender runs in its own process (``bench_backends.py --worker``).
The 1-minute load average is read before every run; a run that starts with
the load at or above ``--max-load`` is marked void (its numbers are printed
but must not be quoted). Every ratio has onnxruntime's absolute time of the
same run beside it.

    python benchmarks/bench_cpu_schedules.py --models resnet18,mobilenet_v2,vit_small,bert_small --batches 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_BACKENDS = Path(__file__).with_name("bench_backends.py")


def _run(model: str, batch: int, contender: str, budget: float) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(BENCH_BACKENDS), "--worker", model, str(batch), contender, "--budget", str(budget)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:120], "load": load}
    return {**json.loads(lines[-1]), "load": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,mobilenet_v2,vit_small,bert_small")
    p.add_argument("--batches", default="1")
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timed runs per contender")
    p.add_argument("--max-load", type=float, default=1.0, help="1-minute load average at which a run is void")
    args = p.parse_args(argv)
    print(
        f"# {os.uname().machine}, {os.cpu_count()} cores; median ms; ratio = graphopt / onnxruntime (same run); "
        f"load = 1-min load average before the run; void when load >= {args.max_load:g}",
        flush=True,
    )
    header = (
        "| model | batch | onnxruntime ms (load) | graphopt untuned ms (load) | ratio | graphopt compile s | valid |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            ort = _run(model, batch, "onnxruntime", args.budget)
            tvm = _run(model, batch, "tvm", args.budget)
            if "median_ms" not in ort or "median_ms" not in tvm:
                print(f"| {model} | {batch} | {ort.get('error', '')} | {tvm.get('error', '')} | | | void |")
                continue
            void = max(ort["load"], tvm["load"]) >= args.max_load
            print(
                f"| {model} | {batch} | {ort['median_ms']:.2f} ({ort['load']:.2f}) | "
                f"{tvm['median_ms']:.2f} ({tvm['load']:.2f}) | {tvm['median_ms'] / ort['median_ms']:.2f} | "
                f"{tvm['compile_s']:.1f} | {'VOID (busy)' if void else 'yes'} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
