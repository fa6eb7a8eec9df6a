"""Compression methods on the digits MLP and CNN: size on disk x accuracy x time, in one run.

    python benchmarks/compression.py            # both models (about 2 minutes on 2 cores)
    python benchmarks/compression.py --model mlp

Every model is trained here (seeded), then compressed by each method; sizes are
bytes of the files written to disk:
- float32 ONNX: the trained model exported by graphopt (`graph.save_onnx`), the baseline;
- graphopt methods: fold-bn, iterative magnitude pruning with fine-tuning
  (`graphopt.train`: a cubic ramp in 5 steps, masks kept) where the method prunes,
  the pipeline, centroid fine-tuning (`finetune_shared`) where it made codebooks, then
  `graph.save_compressed` (.gopt); a pass that is not registered is "not available";
- torch.nn.utils.prune: l1_unstructured at the same sparsity on every conv/linear
  weight, the same iterative ramp and fine-tuning epochs, then gzip of
  `torch.save(state_dict)` and of the ONNX export.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import graphopt
from graphopt.errors import TrainError
from graphopt.ir.encodings import Codebook
from graphopt.models.digits import DigitsCNN, DigitsMLP, load_digits_data, train_digits_model
from graphopt.passes import PassContext, Pipeline, registered_passes
from graphopt.train import evaluate, finetune_shared, iterative_prune, sparsity_schedule, train

SEED = 0
TRAIN_EPOCHS = 15
PRUNE_STEPS, FINETUNE_EPOCHS = 5, 6
SPARSITY, CLUSTERS = 0.9, 16
SHARE_BIASES = f"share-weights{{clusters={CLUSTERS} include=[bias] ignore=[fc.bias]}}"  # fc.bias: 10 < 16 values

# (row label, pipeline after fold-bn, sparsity reached by iterative pruning before it or None)
METHODS = [
    ("graphopt fold-bn (lossless)", "", None),
    ("prune-magnitude{sparsity=0.9} + fine-tune", "", SPARSITY),
    ("share-weights{clusters=16}", f"share-weights{{clusters={CLUSTERS}}}", None),
    ("prune 0.9 + fine-tune + share 16", f"share-weights{{clusters={CLUSTERS}}}", SPARSITY),
    ("prune 0.9 + fine-tune + share 16 (biases too)", SHARE_BIASES, SPARSITY),
    ("prune 0.95 + fine-tune + share 16 (biases too)", SHARE_BIASES, 0.95),
    ("quantize-lut{bits=4}", "quantize-lut{bits=4}", None),
    ("quantize-lut{bits=2}", "quantize-lut{bits=2}", None),
    ("binarize{scale=per-channel}", "binarize", None),
    ("quantize-pow2{bits=4}", "quantize-pow2{bits=4}", None),
]


def quiet(*_):
    pass


def run_pipeline(graph, text: str):
    return Pipeline.parse(text).run(graph, PassContext(log=quiet)).graph


def batches(x, y, size=32):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    return [(x[perm[i : i + size]], y[perm[i : i + size]]) for i in range(0, len(x), size)]


def graphopt_method(graph, pipeline: str, sparsity, train_batches, test, workdir: Path, label: str):
    """(bytes of the .gopt file, accuracy, seconds), or None when a pass is not registered."""
    names = {text.split("{")[0] for text in pipeline.split(",") if text}
    if sparsity is not None:
        names.add("prune-magnitude")
    if not names <= set(registered_passes()):
        return None
    start = time.perf_counter()
    g = run_pipeline(graph, "fold-bn")
    if sparsity is not None:

        def prune(g, ratio):
            return run_pipeline(g, f"prune-magnitude{{sparsity={ratio:.6f} scope=global}}")

        def finetune(g):
            loss = nn.CrossEntropyLoss()
            return train(g, train_batches, loss, epochs=FINETUNE_EPOCHS, optimizer="adam", seed=SEED, log=None).graph

        g = iterative_prune(g, prune, finetune, final_ratio=sparsity, steps=PRUNE_STEPS, log=None)
    if pipeline:
        g = run_pipeline(g, pipeline)
    if any(isinstance(p.encoding, Codebook) and p.trainable for p in g.params.values()):
        loss = nn.CrossEntropyLoss()  # centroids fine-tuned, gradients summed per cluster
        try:
            g = finetune_shared(
                g, train_batches, loss, epochs=FINETUNE_EPOCHS, optimizer="adam", seed=SEED, log=None
            ).graph
        except TrainError as e:
            print(f"  {label}: centroids not fine-tuned: {e}", file=sys.stderr)
    path = g.save_compressed(workdir / f"{label}.gopt")
    seconds = time.perf_counter() - start
    return os.path.getsize(path), evaluate(graphopt.load_compressed(path), test), seconds


def torch_prune(model, x_train, y_train, x_test, y_test, example, workdir: Path):
    """torch.nn.utils.prune at SPARSITY with the same ramp and fine-tuning; gzip of state_dict and ONNX."""
    from torch.nn.utils import prune

    start = time.perf_counter()
    model = copy.deepcopy(model)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    previous = 0.0
    for target in sparsity_schedule(PRUNE_STEPS, SPARSITY):
        # l1_unstructured prunes a share of the entries still unpruned
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=1 - (1 - target) / (1 - previous))
        previous = target
        finetune_torch(model, x_train, y_train)
    for module, name in layers:
        prune.remove(module, name)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    onnx_path = workdir / "torch_pruned.onnx"
    graphopt.trace(model, (example,)).save_onnx(onnx_path)
    sizes = len(gzip.compress(buffer.getvalue(), 9)), len(gzip.compress(onnx_path.read_bytes(), 9))
    return sizes, accuracy, seconds


def finetune_torch(model, x, y):
    """FINETUNE_EPOCHS of Adam (lr 1e-3) in eval mode (BatchNorm statistics frozen, as graphopt.train does)."""
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.eval()
    for _ in range(FINETUNE_EPOCHS):
        for xb, yb in batches(x, y):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()


def bench_model(kind: str, data, workdir: Path) -> list[tuple[str, ...]]:
    torch.manual_seed(SEED)
    model = DigitsMLP() if kind == "mlp" else DigitsCNN()
    train_digits_model(model, epochs=TRAIN_EPOCHS, seed=SEED, data=data)
    flat = kind == "mlp"
    x_train = data.x_train.flatten(1) if flat else data.x_train
    x_test = data.x_test.flatten(1) if flat else data.x_test
    graph = graphopt.trace(model, (x_train[:1],))
    onnx_path = graph.save_onnx(workdir / f"{kind}.onnx")
    base_bytes = os.path.getsize(onnx_path)
    test = [(x_test, data.y_test)]
    base_acc = evaluate(graph, test)
    train_batches = batches(x_train, data.y_train)

    def row(label, size, acc, seconds):
        if size is None:
            return (kind, label, "not available", "", "", "", "")
        return (
            kind,
            label,
            f"{size:,}",
            f"{base_bytes / size:.1f}x",
            f"{100 * acc:.2f}",
            f"{100 * (acc - base_acc):+.2f}",
            f"{seconds:.1f}",
        )

    rows = [row("float32 ONNX file", base_bytes, base_acc, 0.0)]
    rows.append(row("float32 ONNX file, gzip -9", len(gzip.compress(onnx_path.read_bytes(), 9)), base_acc, 0.0))
    for i, (label, pipeline, sparsity) in enumerate(METHODS):
        print(f"  {kind}: {label}", file=sys.stderr, flush=True)
        result = graphopt_method(graph, pipeline, sparsity, train_batches, test, workdir, f"{kind}{i}")
        rows.append(row(label, *(result or (None, None, None))))
    sizes, acc, seconds = torch_prune(model, x_train, data.y_train, x_test, data.y_test, x_train[:1], workdir)
    state, onnx_gz = sizes
    rows.append(row("torch prune l1_unstructured 0.9 + fine-tune, gzip state_dict", state, acc, seconds))
    rows.append(row("torch prune l1_unstructured 0.9 + fine-tune, gzip ONNX", onnx_gz, acc, seconds))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "cnn", "both"], default="both")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_digits_data(SEED)
    header = ("model", "method", "bytes on disk", "vs ONNX", "accuracy %", "change", "time s")
    rows = [header]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ["mlp", "cnn"] if args.model == "both" else [args.model]:
            rows += bench_model(kind, data, Path(tmp))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
