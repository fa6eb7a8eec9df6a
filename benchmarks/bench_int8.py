"""int8 latency: graphopt int8 on TVM (x86 preset, default rules: VNNI conv/matmul) against onnxruntime, one run.

Per model (bundled ResNet-18 / MobileNetV2, seeded weights), from one fp32
ONNX file and one set of seeded random calibration inputs
(``benchmarks/quantization.py``'s helpers):

- onnxruntime fp32;
- onnxruntime's own int8: ``quant_pre_process`` then ``quantize_static`` (QDQ,
  per channel, MinMax), S8S8 and U8S8;
- graphopt int8 (``DEFAULT_PIPELINE,quantize{...}``: fold-bn runs in the
  default pipeline) compiled by TVM for the x86 preset, untuned, with uint8
  activations (what x86's ``vpdpbusd`` takes) and with int8 activations.

Batch 1, 2 threads everywhere, each contender in its own process, the median
of timed runs for ``--budget`` seconds. The 1-minute load average is read
before each run; a row whose load is at or above ``--max-load`` is marked
VOID (printed, not to be quoted). Ratios are to onnxruntime fp32 of the
same run, whose absolute time stands beside each.

    python benchmarks/bench_int8.py --models resnet18,mobilenet_v2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from graphopt.progress import progress_bar

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quantization as q  # noqa: E402  (the helpers of benchmarks/quantization.py)


def run_model(name: str, args, out: Path) -> list[tuple]:
    spec = q.prepare_model(name, argparse.Namespace(calib_samples=args.calib_samples, eval_samples=4), out)
    data = out / f"{name}.eval.npz"
    arrays = {f"{i}_{j}": a for i, s in enumerate(spec["eval"]) for j, a in enumerate(s)}
    np.savez(data, sets=len(spec["eval"]), inputs=len(spec["eval"][0]), **arrays)
    ref = q.offline_outputs(spec["path"], spec["eval"])
    contenders = [("onnxruntime fp32", "ort", spec["path"])]
    for activation in ("S8S8", "U8S8"):
        contenders.append((f"onnxruntime int8 {activation}", "ort", q.ort_quantize(spec["path"], spec["calib"], out,
                                                                                   activation, "MinMax")))  # fmt: skip
    for dtype in args.graphopt_dtypes.split(","):
        sub = out / dtype
        sub.mkdir(exist_ok=True)
        path = q.graphopt_quantize(spec["path"], spec["calib"], sub, f"quantize{{dtype={dtype}}}")
        contenders.append((f"graphopt int8 TVM ({dtype} activations)", "tvm", path))
    rows, fp32_ms = [], None
    for label, kind, path in progress_bar(contenders, desc=name, unit="contender"):
        r = q.measure(kind, path, data, args.budget, args.timeout)
        if "error" in r:
            rows.append((name, label, f"{r['error']}", f"{r['load']:.2f}", "", "", "VOID"))
            continue
        if label == "onnxruntime fp32":
            fp32_ms = r["median_ms"]
        sqnr = "-" if label.endswith("fp32") else f"{q.sqnr_db(ref, r['outputs']):.1f}"
        ratio = f"{r['median_ms'] / fp32_ms:.2f}" if fp32_ms else ""
        valid = "VOID (busy)" if r["load"] >= args.max_load else "yes"
        rows.append((name, label, f"{r['median_ms']:.2f}", f"{r['load']:.2f}", f"{ratio} (fp32 {fp32_ms:.2f} ms)",
                     sqnr, valid))  # fmt: skip
        print(f"  {' | '.join(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,mobilenet_v2")
    p.add_argument("--graphopt-dtypes", default="uint8,int8", help="graphopt activation dtypes to build")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timed runs per contender")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for one contender (build + runs)")
    p.add_argument("--max-load", type=float, default=1.0, help="1-minute load average at which a row is void")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += run_model(name, args, Path(tmp))
    print(
        f"# {os.uname().machine}, {os.cpu_count()} cores, batch 1, {q.THREADS} threads; median ms; "
        f"ratio = contender / onnxruntime fp32 (same run); load = 1-min load average before the run"
    )
    print(q.table(("model", "contender", "ms", "load", "ratio to ort fp32", "SQNR dB", "valid"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
