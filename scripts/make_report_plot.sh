#!/usr/bin/env bash
# Regenerate docs/report.png: the accuracy / size / latency trade-off of seven
# variants of the bundled digits CNN, drawn by `graphopt report --plot`.
#
#   ./scripts/make_report_plot.sh            (a few minutes; needs the tvm, data and plot extras)
#
# 1. `graphopt demo` trains the CNN on scikit-learn's digits and writes it as ONNX;
# 2. `graphopt opt` / `graphopt save` write the variants: int8 (calibrated on 256 training images),
#    80% magnitude-pruned, 50% of the channels pruned, each also fine-tuned for 2 epochs (graphopt.train),
#    and the fine-tuned magnitude-pruned model in int8 (graphopt.train and the quantize pass, from Python);
# 3. `graphopt report` measures each (digits test top-1, TVM x86 latency) and plots them.
# Everything but the plot goes to out/report_plot/ (the full report in report.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT=out/report_plot
rm -rf "$OUT"  # only this run's files
# Batch 1 on a model this small: one TVM thread times steadier than a pool contending with other work.
export TVM_NUM_THREADS="${TVM_NUM_THREADS:-1}"
mkdir -p "$OUT" docs
graphopt() { "$PYTHON" -m graphopt.cli "$@"; }

graphopt -q demo --no-compile --out "$OUT" --epochs 10 > "$OUT/demo.txt"
mv "$OUT/model.onnx" "$OUT/float.onnx"
"$PYTHON" - "$OUT/calib.npz" <<'PY'
import sys

import numpy as np

from graphopt.models import load_digits_data

np.savez(sys.argv[1], x=load_digits_data(seed=0).x_train[:256].numpy())
PY

# Pruned variants, then the same fine-tuned (2 epochs, masks kept) by graphopt.train through the Python API.
graphopt -q save -p 'prune-magnitude{sparsity=0.8}' "$OUT/float.onnx" -o "$OUT/pruned80.gopt" > /dev/null
graphopt -q opt -p 'prune-channels{ratio=0.5}' "$OUT/float.onnx" -o "$OUT/channels50.onnx" > /dev/null
"$PYTHON" - "$OUT" <<'PY'
import sys

import torch

import graphopt
from graphopt.api import run_pipeline_on
from graphopt.models import load_digits_data
from graphopt.train import train

out = sys.argv[1]
torch.set_num_threads(1)
data = load_digits_data(seed=0)
batches = [(data.x_train[i : i + 1], data.y_train[i : i + 1]) for i in range(len(data.x_train))]  # batch 1, as traced
for source, target in (("pruned80.gopt", "pruned80_ft.gopt"), ("channels50.onnx", "channels50_ft.onnx")):
    path = f"{out}/{source}"
    graph = graphopt.load_compressed(path) if source.endswith(".gopt") else graphopt.load_onnx(path)
    tuned = train(graph, batches, torch.nn.functional.cross_entropy, epochs=2, optimizer="adam", lr=1e-3, log=None)
    if target.endswith(".gopt"):
        tuned.graph.save_compressed(f"{out}/{target}")  # masks kept: still 80% sparse
        calibration = [[data.x_train[i : i + 1].numpy()] for i in range(256)]
        int8, _ = run_pipeline_on(tuned.graph, "quantize", calibration=calibration, verify=False)
        int8.save_compressed(f"{out}/{target.replace('.gopt', '_int8.gopt')}")
    else:
        tuned.graph.save_onnx(f"{out}/{target}")
PY
# The verifier's seeded random inputs are no digits: int8 is judged by the report's test accuracy instead
# (the pruned, fine-tuned model is quantized above, through the API, keeping its masks in the .gopt file).
graphopt -q opt -p 'quantize' --no-verify --calib "$OUT/calib.npz" "$OUT/float.onnx" -o "$OUT/int8.onnx" > /dev/null

VARIANTS=()
for v in int8.onnx pruned80.gopt pruned80_ft.gopt pruned80_ft_int8.gopt channels50.onnx channels50_ft.onnx; do
    VARIANTS+=("$OUT/$v")
done
graphopt -q report "$OUT/float.onnx" --compare "${VARIANTS[@]}" --accuracy digits --latency --target x86 \
    --plot docs/report.png > "$OUT/report.txt"
tail -9 "$OUT/report.txt"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
