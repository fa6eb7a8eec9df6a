"""Compress ResNet-18 for ARM: prune 30% of the channels, quantize to int8, compile for aarch64, run on the device.

    python examples/resnet18_arm.py                   # 224x224 input
    python examples/resnet18_arm.py --image-size 64   # quicker

The device is the emulated aarch64 board (scripts/setup_aarch64_emulator.sh sets it up; as root);
on a real board, start `python -m tvm.exec.rpc_server` there and connect with tvm.rpc.connect(host, port).
The weights are the bundled ResNet-18's seeded initialisation: fine-tune after pruning for a real model.
"""

import argparse

import numpy as np
import torch

import graphopt
from graphopt.analysis.params import count_params
from graphopt.backends.tvm.emulator import SETUP_COMMAND, emulated_aarch64_server, emulator_available
from graphopt.models import resnet18

parser = argparse.ArgumentParser()
parser.add_argument("--image-size", type=int, default=224)
args = parser.parse_args()
if not emulator_available():
    raise SystemExit(f"no emulated aarch64 device: run (as root) {SETUP_COMMAND}")

torch.manual_seed(0)
model = resnet18().eval()
x = torch.randn(1, 3, args.image_size, args.image_size)
pipeline = "fold-bn,prune-channels{ratio=0.3},quantize"
calibration = [[torch.randn(1, 3, args.image_size, args.image_size).numpy()] for _ in range(8)]

graph = graphopt.trace(model, (x,))
small = graphopt.Pipeline.parse(pipeline).run(graph, graphopt.PassContext(calibration=calibration)).graph
compiled = graphopt.optimize(small, (x,), target="arm", pipeline="")  # the pipeline already ran
size = {name: count_params(g).nbytes / 2**20 for name, g in (("float", graph), ("compressed", small))}
print(f"weights {size['float']:.1f} MiB float32 -> {size['compressed']:.1f} MiB pruned int8; {compiled}")

with emulated_aarch64_server() as device:
    y = compiled.run_remote(device.connect(), x.numpy())
expected = small.run([x.numpy()])[0]  # the compressed model on this machine
print(f"aarch64 vs host: max |diff| {np.abs(y - expected).max():.2e}, top-1 class {y.argmax()} vs {expected.argmax()}")
assert y.argmax() == expected.argmax()
