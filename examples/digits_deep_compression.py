"""Deep Compression of the digits CNN: prune 80% of the weights, fine-tune, share 16 values per layer, store.

    python examples/digits_deep_compression.py
    python examples/digits_deep_compression.py --epochs 2   # quicker, a little less accurate

Prints the size on disk of the float32 ONNX file against the compressed .gopt file
(masks as relative indices, 4-bit codebook indices, Huffman-coded), and test accuracy.
"""

import argparse
import os
import tempfile

import torch

import graphopt
from graphopt.models import DigitsCNN, load_digits_data, train_digits_model
from graphopt.train import evaluate, finetune_shared, train

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

torch.manual_seed(0)
data = load_digits_data()
model = DigitsCNN()
train_digits_model(model, epochs=args.epochs, data=data)


def batches_of_32(x, y):  # the graph is traced at batch 32: every batch has that size
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x) - 31, 32)]


batches, test = batches_of_32(data.x_train, data.y_train), batches_of_32(data.x_test, data.y_test)
loss = torch.nn.CrossEntropyLoss()

graph = graphopt.trace(model.eval(), (data.x_test[:32],))  # batch 32: the batch the fine-tuning runs
pruned = graphopt.Pipeline.parse("fold-bn,prune-magnitude{sparsity=0.8}").run(graph).graph
pruned = train(pruned, batches, loss, epochs=args.epochs, optimizer="adam", lr=3e-3).graph  # masks stay zero
shared = graphopt.Pipeline.parse("share-weights{clusters=16}").run(pruned).graph
shared = finetune_shared(shared, batches, loss, epochs=max(1, args.epochs // 2), optimizer="adam", lr=1e-3).graph

with tempfile.TemporaryDirectory() as tmp:
    onnx_bytes = os.path.getsize(graph.save_onnx(os.path.join(tmp, "digits.onnx")))
    gopt_bytes = os.path.getsize(shared.save_compressed(os.path.join(tmp, "digits.gopt")))
    restored = graphopt.load_compressed(os.path.join(tmp, "digits.gopt"))
print(f"float32 ONNX {onnx_bytes:,} bytes -> .gopt {gopt_bytes:,} bytes ({onnx_bytes / gopt_bytes:.1f}x smaller)")
accuracy = {name: evaluate(g, test) for name, g in (("float", graph), ("compressed", restored))}
print(f"test accuracy: float {accuracy['float']:.4f}, compressed {accuracy['compressed']:.4f}")
assert gopt_bytes * 5 < onnx_bytes
