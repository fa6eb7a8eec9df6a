"""Sparsity ramps (Zhu & Gupta's cubic, linear, constant) and iterative prune -> fine-tune on the digits MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt.errors import TrainError
from graphopt.models import DigitsMLP, load_digits_data
from graphopt.train import evaluate, iterative_prune, polynomial_sparsity, sparsity_schedule, train

CE = torch.nn.CrossEntropyLoss()


def test_polynomial_ramp_is_cubic_between_its_endpoints():
    ramp = sparsity_schedule(10, 0.8)
    assert len(ramp) == 10 and ramp[-1] == 0.8
    assert ramp[4] == pytest.approx(0.8 * (1 - 0.5**3))  # half way: 0.7
    assert ramp[0] == pytest.approx(0.8 * (1 - 0.9**3))
    steps = np.diff([0.0, *ramp])
    assert np.all(steps > 0) and np.all(np.diff(steps) < 0)  # rising, fast first, slow near the end
    assert polynomial_sparsity(-1, final=0.5, end=10) == 0.0 and polynomial_sparsity(99, final=0.5, end=10) == 0.5
    assert polynomial_sparsity(15, final=0.5, initial=0.1, begin=10, end=20) == pytest.approx(0.5 - 0.4 * 0.125)
    assert polynomial_sparsity(12, final=0.5, begin=10, end=20, power=1) == pytest.approx(0.1)


def test_linear_constant_and_initial_sparsity():
    assert sparsity_schedule(4, 0.8, "linear") == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert sparsity_schedule(3, 0.5, "constant") == [0.5, 0.5, 0.5]
    ramp = sparsity_schedule(4, 0.9, initial=0.5)
    assert ramp[-1] == 0.9 and ramp[0] > 0.5 and ramp == sorted(ramp)
    assert sparsity_schedule(1, 0.3) == [0.3]


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0, 0.5), {}, "steps must be a positive integer"),
        ((3, 1.0), {}, "final \\(1.0\\) < 1"),
        ((3, 0.5), dict(initial=0.6), "initial \\(0.6\\) <= final"),
        ((3, 0.5, "cosine"), {}, "schedule 'cosine' is not one of"),
    ],
)
def test_bad_schedules_are_named(args, kwargs, message):
    with pytest.raises(TrainError, match=message):
        sparsity_schedule(*args, **kwargs)


def magnitude_prune(graph, ratio):
    """Mask the smallest |w| of every weight matrix so that `ratio` of it is zero (pruned entries are the zeros)."""
    graph = graph.copy()
    for name, p in graph.params.items():
        if p.trainable and p.data.ndim == 2:
            order = np.argsort(np.abs(p.data), axis=None, kind="stable")
            mask = np.ones(p.data.size, dtype=bool)
            mask[order[: round(ratio * p.data.size)]] = False
            graph.set_mask(name, mask.reshape(p.data.shape))
    return graph


@pytest.fixture(scope="module")
def digits_mlp():
    """(trained digits MLP graph, train batches, test batches)."""
    data = load_digits_data(seed=0)
    torch.manual_seed(0)
    x = data.x_train.flatten(1)
    graph = graphopt.trace(DigitsMLP().eval(), (x[:2],))
    batches = [(x[i : i + 64], data.y_train[i : i + 64]) for i in range(0, len(x), 64)]
    trained = train(graph, batches, CE, epochs=4, optimizer="adam", lr=3e-3, log=None).graph
    return trained, batches, [(data.x_test.flatten(1), data.y_test)]


def test_ratios_are_cumulative_sparsity_of_the_original(digits_mlp):
    graph, _, _ = digits_mlp
    text, seen, lines = str(graph), [], []
    finetuned = []

    def prune(g, ratio):
        seen.append(ratio)
        return magnitude_prune(g, ratio)

    def finetune(g):
        finetuned.append(g.params["fc.weight"].sparsity)
        return g

    out = iterative_prune(graph, prune, finetune, final_ratio=0.75, steps=4, log=lines.append)
    assert seen == sparsity_schedule(4, 0.75) and len(lines) == 4
    assert finetuned == pytest.approx(seen, abs=1 / 640)  # fine-tuning sees each step's pruned graph
    assert all(out.params[k].sparsity == pytest.approx(0.75, abs=1e-3) for k in ("body.0.weight", "fc.weight"))
    assert str(graph) == text  # the caller's graph is untouched


def test_relative_ratios_compound_to_the_final_sparsity(digits_mlp):
    graph, _, _ = digits_mlp
    seen = []
    iterative_prune(graph, lambda g, r: seen.append(r) or g, final_ratio=0.8, steps=5, relative_to="current", log=None)
    assert np.prod([1 - r for r in seen]) == pytest.approx(0.2)
    cumulative = sparsity_schedule(5, 0.8)
    assert seen[0] == pytest.approx(cumulative[0]) and seen[1] == pytest.approx(
        1 - (1 - cumulative[1]) / (1 - cumulative[0])
    )


def test_prune_and_finetune_keeps_accuracy_that_one_shot_loses(digits_mlp):
    graph, batches, test = digits_mlp
    base = evaluate(graph, test)

    def finetune(g):
        return train(g, batches, CE, epochs=1, optimizer="adam", lr=1e-3, log=None).graph

    gradual = iterative_prune(graph, magnitude_prune, finetune, final_ratio=0.9, steps=4, log=None)
    one_shot = magnitude_prune(graph, 0.9)
    assert gradual.params["body.0.weight"].sparsity == pytest.approx(0.9, abs=1e-3)
    assert np.all(gradual.params["body.0.weight"].data[~gradual.params["body.0.weight"].mask] == 0)
    accuracy, lost = evaluate(gradual, test), evaluate(one_shot, test)
    assert accuracy > base - 0.1 and accuracy > lost + 0.2, (base, accuracy, lost)  # measured: 0.95, 0.92, 0.43


def test_bad_steps_are_named(digits_mlp):
    graph, _, _ = digits_mlp
    with pytest.raises(TrainError, match="step 1: prune_step returned a NoneType, not a Graph"):
        iterative_prune(graph, lambda g, r: None, final_ratio=0.5, steps=2, log=None)
    with pytest.raises(TrainError, match="step 1: finetune_step returned a float"):
        iterative_prune(graph, magnitude_prune, lambda g: 1.0, final_ratio=0.5, steps=2, log=None)
    with pytest.raises(TrainError, match="prune_step must be callable"):
        iterative_prune(graph, "prune-channels", final_ratio=0.5, steps=2)
    with pytest.raises(TrainError, match="relative_to 'model'"):
        iterative_prune(graph, magnitude_prune, final_ratio=0.5, steps=2, relative_to="model")
