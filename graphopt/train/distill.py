"""Knowledge distillation from a teacher Graph into a student Graph, on the shared training loop.

    result = distill(student, teacher, batches, temperature=4.0, alpha=0.9, epochs=10, optimizer="adam")
    result.graph  # the trained student (the caller's student is untouched)

Loss (Hinton et al., 2015), on the first graph output of each (the logits):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

T^2 keeps the soft term's gradients at the scale of the hard term's as T changes.

Feature matching (FitNets' hints): `features=[FeatureMatch("relu_1", "relu_1"), ...]` names a
student value and a teacher value; the student's value passes through a learned
linear projection to the teacher's channels (a bias-free 1x1 conv for [B, C, ...]
maps, a bias-free linear on the last axis for [B, ..., D]) and `feature_weight *
MSE(projection, teacher value)` is added to the loss. The projections are built as
graph nodes on a working copy of the student whose extra outputs are the projected
values (the teacher's copy returns its matched values), so `train` optimizes them
with the student, under one process or torchrun alike; they are removed from the
returned graph.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from graphopt.errors import TrainError
from graphopt.ir.graph import Graph
from graphopt.train.loop import TrainResult, train

__all__ = ["distill", "FeatureMatch", "DistillLoss"]


@dataclass(frozen=True)
class FeatureMatch:
    """Match student value `student` to teacher value `teacher` through a learned projection."""

    student: str
    teacher: str


@dataclass(frozen=True)
class DistillLoss:
    """The distillation loss `train` calls with (student outputs, labels, teacher outputs)."""

    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 1.0

    def __call__(self, outputs, targets, teacher_outputs) -> torch.Tensor:
        student = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        teacher = teacher_outputs if isinstance(teacher_outputs, (tuple, list)) else (teacher_outputs,)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student[0] / t, dim=-1),
            F.log_softmax(teacher[0] / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        loss = self.alpha * t * t * soft
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(student[0], targets)
        for s, f in zip(student[1:], teacher[1:]):
            loss = loss + self.feature_weight * F.mse_loss(s, f)
        return loss


def distill(
    student: Graph,
    teacher: Graph,
    data: Iterable,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    features: Sequence[FeatureMatch | tuple[str, str]] = (),
    feature_weight: float = 1.0,
    seed: int = 0,
    **train_options,
) -> TrainResult:
    """Train `student` to match `teacher` (soft labels, optional features) and the labels; see the module doc.

    data: batches `(inputs, labels)` (`graphopt.train.batches`); both graphs take the same inputs.
    temperature: T > 0; alpha in [0, 1]: the soft term's share (1: soft labels only).
    features: (student value, teacher value) pairs matched through learned projections.
    seed: seeds the projections' initial weights and the training run.
    train_options: passed to `graphopt.train.train` (epochs, steps, optimizer, lr, log, device, ...).
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise TrainError(f"distill: temperature must be a positive number, got {temperature!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise TrainError(f"distill: alpha must lie in [0, 1], got {alpha!r}")
    if len(student.inputs) != len(teacher.inputs):
        raise TrainError(
            f"distill: the student takes {len(student.inputs)} inputs and the teacher {len(teacher.inputs)}; "
            f"both run on the same batches"
        )
    matches = [m if isinstance(m, FeatureMatch) else FeatureMatch(*m) for m in features]
    work, added = _student_with_projections(student, teacher, matches, seed)
    teacher_view = teacher.copy()
    teacher_view.set_outputs([teacher.outputs[0], *(m.teacher for m in matches)])
    loss = DistillLoss(float(temperature), float(alpha), float(feature_weight))
    result = train(work, data, loss, teacher=teacher_view, seed=seed, **train_options)
    trained = result.graph
    trained.set_outputs(student.outputs)
    for node_name, param in reversed(added):
        trained.remove_node(trained.node(node_name))
        trained.remove_param(param)
    written = tuple(name for name in result.written if name in student.params)
    return dataclasses.replace(result, graph=trained, written=written)


def _student_with_projections(
    student: Graph, teacher: Graph, matches: list[FeatureMatch], seed: int
) -> tuple[Graph, list[tuple[str, str]]]:
    """A copy of the student returning its logits and, per match, the projected student value."""
    work = student.copy()
    rng = np.random.default_rng(seed)
    added, outputs = [], [student.outputs[0]]
    for i, m in enumerate(matches):
        s_type, t_type = _type(student, m.student, "student"), _type(teacher, m.teacher, "teacher")
        if s_type.rank != t_type.rank or s_type.rank < 2:
            raise TrainError(
                f"distill: feature match {i}: student '{m.student}' {s_type} and teacher '{m.teacher}' {t_type} "
                f"need the same rank (2 or more)"
            )
        conv = s_type.rank > 2 and s_type.shape[2:] == t_type.shape[2:]
        c_in, c_out = (s_type.shape[1], t_type.shape[1]) if conv else (s_type.shape[-1], t_type.shape[-1])
        if not conv and s_type.shape[:-1][1:] != t_type.shape[:-1][1:]:
            raise TrainError(
                f"distill: feature match {i}: student '{m.student}' {s_type} and teacher '{m.teacher}' {t_type} "
                f"differ in more than their channel axis; a linear projection cannot map one to the other"
            )
        bound = 1.0 / math.sqrt(c_in)
        shape = (c_out, c_in, *([1] * (s_type.rank - 2))) if conv else (c_out, c_in)
        weight = rng.uniform(-bound, bound, shape).astype(s_type.dtype)
        param = work.add_param(f"distill_projection_{i}", weight, trainable=True)
        spatial = s_type.rank - 2
        attrs = {"stride": [1] * spatial, "dilation": [1] * spatial, "pads": [0] * (2 * spatial)} if conv else None
        node = work.add_node("conv" if conv else "linear", [m.student, param], attrs=attrs, name=f"distill_project_{i}")
        projected = work.type_of(node.output)
        if (projected.shape[1:], projected.dtype) != (t_type.shape[1:], t_type.dtype):
            raise TrainError(
                f"distill: feature match {i}: the projection of '{m.student}' gives {work.type_of(node.output)}, "
                f"the teacher's '{m.teacher}' is {t_type}"
            )
        added.append((node.name, param))
        outputs.append(node.output)
    work.set_outputs(outputs)
    return work, added


def _type(graph: Graph, value: str, which: str):
    if value not in graph.values:
        raise TrainError(f"distill: the {which} graph '{graph.name}' has no value named '{value}'")
    return graph.type_of(value)
