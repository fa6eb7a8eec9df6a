"""train / evaluate on the digits models: learning, masks, frozen parameters, the caller's graph, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphopt
from graphopt.errors import TrainError
from graphopt.models import DigitsCNN, DigitsMLP, evaluate_digits_model, load_digits_data
from graphopt.train import TrainResult, evaluate, train

CE = torch.nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(seed=0)


def _batches(x, y, size=64):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


@pytest.fixture(scope="module")
def mlp(digits):
    """(untrained MLP, its graph, train batches, test batches)."""
    torch.manual_seed(0)
    model = DigitsMLP().eval()
    graph = graphopt.trace(model, (digits.x_train[:2].flatten(1),))
    train_b = _batches(digits.x_train.flatten(1), digits.y_train)
    return model, graph, train_b, [(digits.x_test.flatten(1), digits.y_test)]


def _snapshot(graph):
    return str(graph), graph.version, {k: (p, p.data.copy()) for k, p in graph.params.items()}


def _untouched(graph, snap) -> bool:
    text, version, params = snap
    same = all(graph.params[k] is p and np.array_equal(p.data, data) for k, (p, data) in params.items())
    return str(graph) == text and graph.version == version and same and len(graph.params) == len(params)


def test_mlp_learns_digits_and_the_callers_graph_is_untouched(mlp, digits):
    model, graph, train_b, test_b = mlp
    snap = _snapshot(graph)
    before = evaluate(graph, test_b)
    lines = []
    result = train(graph, train_b, CE, epochs=3, optimizer="adam", lr=3e-3, log=lines.append)
    assert isinstance(result, TrainResult) and result.graph is not graph
    assert _untouched(graph, snap)
    after = evaluate(result.graph, test_b)
    assert before < 0.3 and after > 0.85, (before, after)
    assert result.steps == 3 * len(train_b) == len(result.losses)
    assert len(result.epoch_losses) == 3 and result.epoch_losses[0] > result.epoch_losses[-1]
    assert [ln.split(":")[1] for ln in lines] == [" epoch 1/3", " epoch 2/3", " epoch 3/3"]
    assert set(result.written) == {k for k, p in graph.params.items() if p.trainable}
    result.graph.verify()


def test_cnn_learns_digits(digits):
    torch.manual_seed(0)
    graph = graphopt.trace(DigitsCNN().eval(), (digits.x_train[:2],))
    result = train(graph, _batches(digits.x_train, digits.y_train), CE, epochs=3, optimizer="adam", lr=3e-3, log=None)
    assert evaluate(result.graph, [(digits.x_test, digits.y_test)]) > 0.6


def test_evaluate_matches_the_torch_model_and_weights_batches_by_size(mlp, digits):
    model, graph, _, test_b = mlp
    expected = evaluate_digits_model(model, digits)
    assert evaluate(graph, test_b) == pytest.approx(expected, abs=1e-6)
    x, y = test_b[0]
    uneven = [(x[:7], y[:7]), (x[7:300], y[7:300]), (x[300:], y[300:])]
    assert evaluate(graph, uneven) == pytest.approx(expected, abs=1e-6)
    assert evaluate(graph, uneven, lambda out, t: (out.argmax(1) != t).float().mean()) == pytest.approx(1 - expected)


@pytest.mark.parametrize(
    "options",
    [dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2), dict(optimizer="adam", weight_decay=1e-2)],
)
def test_masked_entries_stay_zero(mlp, options):
    _, graph, train_b, _ = mlp
    masked = graph.copy()
    w = masked.params["body.0.weight"].data
    mask = np.abs(w) > np.quantile(np.abs(w), 0.6)
    masked.set_mask("body.0.weight", mask)
    out = train(masked, train_b, CE, epochs=2, log=None, **options).graph.params["body.0.weight"]
    assert np.array_equal(out.mask, mask)
    assert np.all(out.data[~mask] == 0)
    assert np.all(out.data[mask] != masked.params["body.0.weight"].data[mask])  # the rest trained


def test_masked_gradients_are_zero_at_every_step(mlp):
    _, graph, train_b, _ = mlp
    masked = graph.copy()
    mask = np.zeros((10, 64), dtype=bool)
    mask[:, ::2] = True
    masked.set_mask("fc.weight", mask)
    seen = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            seen.extend(p.grad.clone() for p in self.param_groups[0]["params"] if p.shape == (10, 64))
            return super().step(closure)

    train(masked, train_b[:3], CE, optimizer=lambda ps: Recording(ps, lr=0.1), log=None)
    assert len(seen) == 3
    assert all(torch.all(g[:, 1::2] == 0) and torch.any(g[:, ::2] != 0) for g in seen)


def test_frozen_parameters_do_not_change(mlp):
    _, graph, train_b, _ = mlp
    frozen = graph.copy()
    frozen.set_trainable("fc.weight", False)
    result = train(frozen, train_b, CE, optimizer="sgd", lr=0.1, momentum=0.9, log=None)
    for name, p in frozen.params.items():
        same = np.array_equal(result.graph.params[name].data, p.data)
        assert same == (not p.trainable), name  # fc.weight, BatchNorm statistics, counters stay; the rest trained
    assert {name for name, p in frozen.params.items() if not p.trainable} >= {"fc.weight", "body.1.running_var"}
    assert "fc.weight" not in result.written and not result.graph.params["fc.weight"].trainable


def test_steps_cycle_the_data_and_logging(mlp, capsys):
    _, graph, train_b, _ = mlp
    lines = []
    result = train(graph, train_b[:2], CE, steps=5, log=lines.append, log_every=2)
    assert result.steps == 5 and len(result.losses) == 5 and len(result.epoch_losses) == 3  # passes of 2, 2, 1
    assert [ln for ln in lines if "step" in ln.split(":")[1]] == [
        f"train: step {s}: loss {result.losses[s - 1]:.4f}" for s in (2, 4)
    ]
    assert sum(": epoch " in ln for ln in lines) == 3
    assert train(graph, train_b[:3], CE, epochs=4, steps=2, log=None).steps == 2  # whichever comes first
    train(graph, train_b[:1], CE, log=None)
    assert capsys.readouterr().out == ""


def test_one_shot_iterators_serve_one_pass(mlp):
    _, graph, train_b, _ = mlp
    assert train(graph, iter(train_b[:2]), CE, log=None).steps == 2
    with pytest.raises(TrainError, match="one-shot iterator .* pass 2"):
        train(graph, (b for b in train_b[:2]), CE, epochs=2, log=None)


def test_numpy_batches_seeded_runs_and_the_global_rng(mlp):
    _, graph, train_b, _ = mlp
    as_numpy = [(x.numpy(), y.numpy()) for x, y in train_b[:4]]
    state = torch.get_rng_state()
    a = train(graph, as_numpy, CE, log=None, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = train(graph, train_b[:4], CE, log=None, seed=3)
    assert all(np.array_equal(a.graph.params[k].data, b.graph.params[k].data) for k in graph.params)


def test_impls_replace_ops_while_training(mlp):
    _, graph, train_b, _ = mlp
    calls = []

    def relu(x):
        calls.append(x.requires_grad)
        return F.relu(x)

    plain = train(graph, train_b[:2], CE, log=None)
    swapped = train(graph, train_b[:2], CE, log=None, impls={"relu": relu})
    assert calls and all(calls)  # ran in the training graph, with gradients
    assert np.array_equal(plain.graph.params["fc.weight"].data, swapped.graph.params["fc.weight"].data)


def test_teacher_outputs_reach_the_loss(mlp):
    _, graph, train_b, test_b = mlp
    teacher = train(graph, train_b, CE, epochs=3, optimizer="adam", lr=3e-3, log=None).graph

    def distill(outputs, targets, teacher_outputs):
        return F.kl_div(F.log_softmax(outputs, 1), F.softmax(teacher_outputs, 1), reduction="batchmean")

    unlabeled = [(x, torch.zeros(len(x))) for x, _ in train_b]  # targets unused: the teacher labels
    student = train(graph, unlabeled, distill, epochs=3, optimizer="adam", lr=3e-3, teacher=teacher, log=None)
    x, _ = test_b[0]
    agree = evaluate(student.graph, [(x, torch.as_tensor(teacher.run([x.numpy()])[0]).argmax(1))])
    assert agree > 0.8
    with pytest.raises(TrainError, match="teacher must be a Graph or an nn.Module"):
        train(graph, train_b[:1], distill, teacher="teacher", log=None)


@pytest.mark.parametrize(
    "data, loss, options, message",
    [
        ([], CE, {}, "data yielded no batches"),
        ("batches", "cross-entropy", {}, "loss_fn must be callable"),
        ("batches", torch.nn.CrossEntropyLoss(reduction="none"), {}, "must return a scalar tensor .* shape \\[64\\]"),
        ("batches", lambda o, t: 1.0, {}, "must return a scalar tensor .* got float"),
        ("batches", lambda o, t: CE(o.detach(), t), {}, "does not depend on the trainable parameters"),
        ("batches", lambda o, t: o.sum() * float("nan"), {}, "step 1 .* the loss is nan"),
        ([(torch.zeros(2, 64),)], CE, {}, "batch 0: expected a pair .* tuple of length 1"),
        ([((torch.zeros(2, 64), torch.zeros(2, 64)), torch.zeros(2))], CE, {}, "2 input tensor.* inputs \\['x'\\]"),
        ([("x", torch.zeros(2))], CE, {}, "input 'x' is a str"),
        ("batches", CE, dict(optimizer="lbfgs"), "optimizer 'lbfgs' is not one of"),
        ("batches", CE, dict(optimizer=lambda ps: "sgd"), "returned a str, not a torch Optimizer"),
        ("batches", CE, dict(optimizer="adam", momentum=0.9), "momentum is an SGD option"),
        ("batches", CE, dict(epochs=0), "epochs must be a positive integer"),
        ("batches", CE, dict(steps=2.5), "steps must be a positive integer"),
        ("batches", CE, dict(lr=-1.0), "lr must be positive"),
    ],
)
def test_bad_input_is_named(mlp, data, loss, options, message):
    _, graph, train_b, _ = mlp
    with pytest.raises(TrainError, match=message):
        train(graph, train_b[:2] if data == "batches" else data, loss, log=None, **options)


def test_a_graph_without_trainable_parameters_is_refused(mlp):
    _, graph, train_b, _ = mlp
    frozen = graph.copy()
    for name in graph.params:
        frozen.set_trainable(name, False)
    with pytest.raises(TrainError, match="graph 'DigitsMLP' has no trainable float parameters"):
        train(frozen, train_b, CE, log=None)
    with pytest.raises(TrainError, match="evaluate: data yielded no samples"):
        evaluate(graph, [])
    with pytest.raises(TrainError, match="metric 'f1'"):
        evaluate(graph, train_b[:1], "f1")
