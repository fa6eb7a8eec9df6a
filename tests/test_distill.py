"""Knowledge distillation: a half-width digits student taught by a trained teacher beats the same student on labels."""

from __future__ import annotations

import pytest
import torch

import graphopt
from graphopt.errors import TrainError
from graphopt.ir.fingerprint import fingerprint
from graphopt.models.digits import DigitsMLP, load_digits_data, train_digits_model
from graphopt.train import DistillLoss, FeatureMatch, distill, evaluate, train

EPOCHS, LR, TEMPERATURE, ALPHA = 4, 1e-3, 2.0, 0.5


@pytest.fixture(scope="module")
def setup():
    """(teacher graph, untrained half-width student graph, shuffled train batches, test batches)."""
    data = load_digits_data(0)
    torch.manual_seed(0)
    teacher_model = DigitsMLP()  # hidden (128, 64)
    train_digits_model(teacher_model, epochs=15, seed=0, data=data)
    x_train, x_test = data.x_train.flatten(1), data.x_test.flatten(1)
    teacher = graphopt.trace(teacher_model, (x_train[:1],))
    torch.manual_seed(1)
    student = graphopt.trace(DigitsMLP(hidden=(64, 32)).eval(), (x_train[:1],))
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    batches = [(x_train[perm[i : i + 32]], data.y_train[perm[i : i + 32]]) for i in range(0, len(x_train), 32)]
    return teacher, student, batches, [(x_test, data.y_test)]


def test_distilled_student_beats_the_student_trained_on_labels(setup):
    teacher, student, batches, test = setup
    before = fingerprint(student)
    options = dict(epochs=EPOCHS, optimizer="adam", lr=LR, seed=0, log=None)
    labels_only = train(student, batches, torch.nn.CrossEntropyLoss(), **options).graph
    distilled = distill(student, teacher, batches, temperature=TEMPERATURE, alpha=ALPHA, **options).graph
    teacher_acc, labels_acc, distilled_acc = (evaluate(g, test) for g in (teacher, labels_only, distilled))
    print(f"teacher {teacher_acc:.4f}  student on labels {labels_acc:.4f}  distilled {distilled_acc:.4f}")
    assert distilled_acc > labels_acc
    assert teacher_acc > distilled_acc
    assert fingerprint(student) == before  # the caller's student is untouched


def test_feature_matching_trains_projections_and_returns_the_plain_student(setup):
    teacher, student, batches, test = setup
    result = distill(
        student, teacher, batches, features=[FeatureMatch("relu_1", "relu_1")], epochs=1, optimizer="adam", log=None
    )
    graph = result.graph
    assert list(graph.params) == list(student.params) and graph.outputs == student.outputs
    assert [n.name for n in graph.nodes] == [n.name for n in student.nodes]
    assert set(result.written) <= set(student.params) and "linear_1.weight" not in result.written
    assert evaluate(graph, test) > 0.5
    moved = [n for n in student.params if not (graph.params[n].data == student.params[n].data).all()]
    assert "body.0.weight" in moved  # feature loss and soft labels reached the first layer


def test_distill_loss_scales_the_soft_term_by_t_squared():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    soft_2 = DistillLoss(temperature=2.0, alpha=1.0)(student, labels, teacher)
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(student / 2, -1), torch.softmax(teacher / 2, -1), reduction="batchmean"
    )
    assert torch.allclose(soft_2, 4 * kl)
    hard = DistillLoss(alpha=0.0)(student, labels, teacher)
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(student, labels))


def test_bad_options_are_refused_by_name(setup):
    teacher, student, batches, _ = setup
    with pytest.raises(TrainError, match="temperature must be a positive number"):
        distill(student, teacher, batches, temperature=0)
    with pytest.raises(TrainError, match=r"alpha must lie in \[0, 1\]"):
        distill(student, teacher, batches, alpha=1.5)
    with pytest.raises(TrainError, match="student graph .* has no value named 'nope'"):
        distill(student, teacher, batches, features=[("nope", "relu_1")])
    with pytest.raises(TrainError, match="teacher graph .* has no value named 'relu_9'"):
        distill(student, teacher, batches, features=[FeatureMatch("relu_1", "relu_9")])
