"""Low-bit post-training quantization on the digits CNN: plain rounding, CLE, bias correction, AdaRound.

One run, one trained model, one calibration set, one bit width (W4A8: 4-bit weights,
per tensor by default, int8 activations), every method:
- plain rounding:       fold-bn,quantize{weights-bits=4}
- CLE:                  fold-bn,equalize-cross-layer,quantize{weights-bits=4}
- bias correction:      fold-bn,quantize{weights-bits=4},correct-bias
- AdaRound:             fold-bn,quantize{weights-bits=4},round-adaptive
- CLE + AdaRound + BC:  fold-bn,equalize-cross-layer,quantize{weights-bits=4},round-adaptive,correct-bias
Each row: test accuracy, output SQNR (logits on the test set against the float model),
and the seconds the pipeline took, with the 1-minute load average before it.

The AIMET column (`aimet-torch`, Qualcomm's implementations of the same methods) probes
`import aimet_torch` in the interpreter given by `--aimet-python` (a throwaway venv:
AIMET must not change the pinned torch) and states why it is absent, with the import
error. aimet-torch 2.42.0 installs beside torch 2.13.0+cpu only with torchvision 0.28.0
(an unpinned torchvision pulls torch 2.14.1 and CUDA 13 wheels), whose PyPI build is for
CUDA torch: its operators do not load, and `import aimet_torch` stops at
aimet_torch/utils.py (`import torchvision`): "operator torchvision::nms does not exist".
So the AIMET side is not driven by this script yet ("not run" where it imports).

    python benchmarks/low_bit.py                               # ~5 minutes on 2 idle cores
    python benchmarks/low_bit.py --aimet-python /tmp/aimet_venv/bin/python
    python benchmarks/low_bit.py --epochs 1 --iterations 5     # smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CALIB_BATCH = 64


def methods(w4a8: str, iterations: int) -> dict[str, str]:
    ada = f"round-adaptive{{iterations={iterations}}}"
    return {
        "plain rounding": f"fold-bn,{w4a8}",
        "CLE": f"fold-bn,equalize-cross-layer,{w4a8}",
        "bias correction": f"fold-bn,{w4a8},correct-bias",
        "AdaRound": f"fold-bn,{w4a8},{ada}",
        "CLE + AdaRound + bias correction": f"fold-bn,equalize-cross-layer,{w4a8},{ada},correct-bias",
    }


def aimet_status(python: str) -> str:
    """'available (aimet-torch X)' or why AIMET is absent (the last line of its import error)."""
    probe = "import importlib.metadata as m, aimet_torch; print(m.version('aimet-torch'))"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"absent: {python} could not run ({e})"
    if done.returncode == 0:
        return f"available (aimet-torch {done.stdout.strip()})"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return f"absent: `import aimet_torch` fails: {lines[-1] if lines else 'exit ' + str(done.returncode)}"


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def run(args) -> dict:
    import torch

    import graphopt
    from graphopt.models.digits import DigitsCNN, load_digits_data, train_digits_model
    from graphopt.passes import PassContext, Pipeline
    from graphopt.passes.base import sqnr_db
    from graphopt.passes.weight_qdq import FloatReference
    from graphopt.train import evaluate

    torch.manual_seed(0)
    model = DigitsCNN()
    data = load_digits_data(seed=0, test_size=0.3)
    float_acc = train_digits_model(model, epochs=args.epochs, data=data, flat=False)
    graph = graphopt.trace(model, (data.x_train[:CALIB_BATCH],))
    calib = [[data.x_train[i : i + CALIB_BATCH].numpy()] for i in range(0, args.calib, CALIB_BATCH)]
    test = [(data.x_test, data.y_test)]
    x = data.x_test.numpy()
    ref = graph.run([x])[0]
    w4a8 = f"quantize{{weights={args.weights} weights-bits=4}}"
    aimet = aimet_status(args.aimet_python)
    rows = [{"method": "float", "pipeline": "", "acc": float_acc, "sqnr": float("inf"), "s": 0.0, "load": load()}]
    for name, text in methods(w4a8, args.iterations).items():
        before = load()
        start = time.perf_counter()
        ctx = PassContext(instruments=[FloatReference()], calibration=calib)
        q = Pipeline.parse(text).run(graph, ctx).graph
        seconds = time.perf_counter() - start
        acc, db = evaluate(q, test), sqnr_db(ref, q.run([x])[0])
        rows.append({"method": name, "pipeline": text, "acc": acc, "sqnr": db, "s": seconds, "load": before})
        print(f"{name}: acc {acc:.4f}, SQNR {db:.1f} dB, {seconds:.1f} s (load {before})", flush=True)
    return {"rows": rows, "aimet": aimet, "setup": setup_line(args, len(calib))}


def setup_line(args, sets: int) -> str:
    import torch

    return (
        f"# digits CNN trained {args.epochs} epochs (seed 0, 70/30 split); W4A8: 4-bit {args.weights} weights, "
        f"int8 activations; calibration: {sets * CALIB_BATCH} training images in {sets} batches; "
        f"AdaRound {args.iterations} iterations per layer; torch {torch.__version__}; seconds with the 1-minute load "
        f"average before each pipeline"
    )


def table(result: dict) -> str:
    lines = [
        result["setup"],
        "",
        "| method | graphopt acc | graphopt SQNR dB | s (load) | AIMET acc / SQNR |",
        "|---|---|---|---|---|",
    ]
    aimet = "absent (below)" if result["aimet"].startswith("absent") else "not run"
    for r in result["rows"]:
        db = "exact" if r["sqnr"] == float("inf") else f"{r['sqnr']:.1f}"
        shown = "" if r["method"] == "float" else aimet
        lines.append(f"| {r['method']} | {r['acc']:.4f} | {db} | {r['s']:.1f} ({r['load']}) | {shown} |")
    lines += ["", "AIMET: " + result["aimet"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=200, help="AdaRound iterations per layer")
    parser.add_argument("--calib", type=int, default=256, help="calibration images (batches of 64)")
    parser.add_argument("--weights", choices=("per-tensor", "per-channel"), default="per-tensor")
    parser.add_argument("--aimet-python", default=sys.executable, help="interpreter to try aimet-torch in")
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
