"""Prune the small ViT (half its attention heads and MLP units), then distill it from the unpruned teacher.

    python examples/vit_prune_distill.py
    python examples/vit_prune_distill.py --epochs 1 --train-batches 8   # a quick look, not accurate

Data: scikit-learn's digits, each 8x8 image scaled up to 32x32 RGB (what the bundled ViT takes).
"""

import argparse

import torch

import graphopt
from graphopt.models import load_digits_data, vit_small
from graphopt.train import distill, evaluate, train

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--train-batches", type=int, default=None, help="train on only the first N batches of 32")
args = parser.parse_args()

torch.manual_seed(0)
data = load_digits_data()


def images(x):  # (N, 1, 8, 8) -> (N, 3, 32, 32)
    return x.repeat_interleave(4, 2).repeat_interleave(4, 3).expand(-1, 3, -1, -1).contiguous()


def batches_of_32(x, y):  # the graph is traced at batch 32: every batch has that size
    return [(images(x[i : i + 32]), y[i : i + 32]) for i in range(0, len(x) - 31, 32)]


batches, test = batches_of_32(data.x_train, data.y_train), batches_of_32(data.x_test, data.y_test)
batches = batches[: args.train_batches]
loss = torch.nn.CrossEntropyLoss()
graph = graphopt.trace(vit_small().eval(), (batches[0][0],))
teacher = train(graph, batches, loss, epochs=args.epochs, optimizer="adam", lr=1e-3).graph

pruned = graphopt.Pipeline.parse("prune-heads{ratio=0.5},prune-ffn{ratio=0.5}").run(teacher).graph
student = distill(pruned, teacher, batches, temperature=4.0, alpha=0.7, epochs=args.epochs, optimizer="adam", lr=1e-3)

for name, g in (("teacher", teacher), ("pruned", pruned), ("pruned + distilled", student.graph)):
    print(f"{name:>18}: {g.num_parameters():>9,} parameters, test accuracy {evaluate(g, test):.4f}")
assert student.graph.num_parameters() < 0.7 * teacher.num_parameters()
