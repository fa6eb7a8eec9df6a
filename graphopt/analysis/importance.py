"""How much each unit of a dependency group matters: the criteria structured pruning ranks by.

Every criterion scores a group's units over all the parameters the group
slices (DepGraph's group importance: a channel is judged by its conv row,
its bias, its batch-norm scale and the columns of the layers reading it):

- `l1`, `l2`: magnitude of the unit's weights (sum of |w|, or the L2 norm).
- `bn-scale`: |gamma| of the batch/layer norms in the group (network
  slimming); groups without a norm fall back to `l1`, and say so.
- `taylor`: first-order Taylor estimate |sum(w * dL/dw)| over the unit's
  weights (Molchanov et al.), with gradients taken on calibration data. With
  no labels, the loss is cross-entropy against the model's own predictions
  for class scores (2-D outputs) and half the mean square otherwise.
- `random`: seeded uniform scores (a baseline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from graphopt.analysis.dependency import Group, GroupMember

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph

CRITERIA = ("l1", "l2", "bn-scale", "taylor", "random")
_NORMS = ("batch_norm", "layer_norm")


def _per_unit(array: np.ndarray, member: GroupMember, power: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(array.astype(np.float64)) ** power, member.axis, 0)
    per_coord = moved.reshape(moved.shape[0], -1).sum(axis=1)
    return np.array([per_coord[p].sum() for p in member.positions])


def _is_norm_scale(graph: "Graph", name: str) -> bool:
    return any(u.op in _NORMS and len(u.inputs) > 1 and u.inputs[1] == name for u in graph.users(name))


def _float_params(graph: "Graph", group: Group) -> list[GroupMember]:
    """The learned float tensors of a group: weights, biases, norm scales (not frozen running statistics)."""
    return [
        m
        for m in group.params()
        if graph.params[m.value].trainable and np.issubdtype(graph.params[m.value].data.dtype, np.floating)
    ]


def magnitude(graph: "Graph", group: Group, power: int) -> np.ndarray:
    total = np.zeros(group.units)
    for m in _float_params(graph, group):
        total += _per_unit(graph.params[m.value].data, m, power)
    return np.sqrt(total) if power == 2 else total


def bn_scale(graph: "Graph", group: Group) -> np.ndarray | None:
    members = [m for m in _float_params(graph, group) if _is_norm_scale(graph, m.value)]
    if not members:
        return None
    return sum(_per_unit(graph.params[m.value].data, m, 1) for m in members)


def taylor(graph: "Graph", group: Group, grads: dict[str, np.ndarray]) -> np.ndarray:
    total = np.zeros(group.units)
    for m in _float_params(graph, group):
        if m.value not in grads:
            continue
        prod = np.moveaxis(graph.params[m.value].data.astype(np.float64) * grads[m.value], m.axis, 0)
        per_coord = prod.reshape(prod.shape[0], -1).sum(axis=1)
        total += np.array([abs(per_coord[p].sum()) for p in m.positions])
    return total


def gradients(graph: "Graph", batches: Iterable[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """Sum over `batches` of d(loss)/d(parameter) for every trainable float parameter (the unlabeled loss above)."""
    import torch

    from graphopt.ir.types import to_torch_tensor

    module = graph.to_torch()
    module.train(False)
    count = 0
    for inputs in batches:
        outputs = module(*(to_torch_tensor(np.asarray(x)) for x in inputs))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = sum(_unlabeled_loss(o) for o in outputs if o.is_floating_point())
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        count += 1
    if count == 0:
        raise ValueError("taylor importance needs at least one calibration batch; the calibration set is empty")
    grads = {}
    for name, attr in module.param_names.items():
        p = getattr(module, attr, None)
        if isinstance(p, torch.nn.Parameter) and p.grad is not None:
            grads[name] = p.grad.detach().double().numpy()
    return grads


def _unlabeled_loss(out):
    import torch.nn.functional as F

    if out.dim() == 2 and out.shape[1] > 1:
        return F.cross_entropy(out, out.detach().argmax(dim=1))
    return 0.5 * out.pow(2).mean()


def unit_importance(
    graph: "Graph", group: Group, criterion: str, *, grads: dict[str, np.ndarray] | None = None, seed: int = 0
) -> tuple[np.ndarray, str]:
    """(score per unit, the criterion actually used) for one group; higher scores are kept."""
    if criterion == "l1":
        return magnitude(graph, group, 1), "l1"
    if criterion == "l2":
        return magnitude(graph, group, 2), "l2"
    if criterion == "bn-scale":
        scores = bn_scale(graph, group)
        return (magnitude(graph, group, 1), "l1") if scores is None else (scores, "bn-scale")
    if criterion == "taylor":
        if grads is None:
            raise ValueError("taylor importance needs gradients (see importance.gradients)")
        return taylor(graph, group, grads), "taylor"
    if criterion == "random":
        return np.random.default_rng([seed, group.index]).random(group.units), "random"
    raise ValueError(f"unknown importance '{criterion}'; known: {', '.join(CRITERIA)}")
