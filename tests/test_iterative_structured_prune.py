"""Iterative structured pruning on real data: prune-channels in cubic steps, fine-tuning after each.

graphopt.train.iterative_prune drives the schedule; with relative_to="current"
each step removes the share of the *remaining* channels that brings the model
to the schedule's target, which is what a slicing pass needs.
"""

from __future__ import annotations

import torch

import graphopt
from graphopt.analysis.cost import graph_cost
from graphopt.models.digits import DigitsCNN, load_digits_data, train_digits_model
from graphopt.passes import Pipeline
from graphopt.train import evaluate, iterative_prune, train


def test_cubic_schedule_of_channel_pruning_with_finetuning_keeps_accuracy():
    torch.manual_seed(0)
    data = load_digits_data(0)
    model = DigitsCNN()
    float_acc = train_digits_model(model, epochs=12, data=data)
    graph = graphopt.trace(model, (data.x_test[:1],))
    batches = [(data.x_train[i : i + 64], data.y_train[i : i + 64]) for i in range(0, len(data.y_train), 64)]
    test = [(data.x_test, data.y_test)]
    widths = []

    def prune(g, ratio):
        out = Pipeline.parse(f"prune-channels{{ratio={ratio:.6f}}}").run(g).graph
        convs = [p for n, p in out.params.items() if n.startswith("features.") and p.data.ndim == 4]
        widths.append(sum(p.data.shape[0] for p in convs))
        return out

    def finetune(g):
        return train(g, batches, torch.nn.CrossEntropyLoss(), epochs=4, optimizer="adam", lr=2e-3, log=None).graph

    pruned = iterative_prune(graph, prune, finetune, final_ratio=0.5, steps=3, relative_to="current", log=None)
    acc = evaluate(pruned, test)
    macs = graph_cost(pruned).macs / graph_cost(graph).macs
    print(f"float {float_acc:.4f}  pruned+finetuned {acc:.4f}  channels per step {widths}  MACs kept {macs:.2f}")
    assert (
        widths == sorted(widths, reverse=True) and widths[-1] <= 60
    )  # 112 conv channels, about half removed (floored per group and step)
    assert macs < 0.35
    assert acc >= float_acc - 0.02
    assert str(graph) != str(pruned) and graph.params["features.0.weight"].data.shape[0] == 16  # input untouched
