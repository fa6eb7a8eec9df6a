"""Fine-tuning shared weights: train a codebook's centroids with gradients summed per cluster (Deep Compression).

    shared = Pipeline.parse("share-weights{clusters=16}").run(graph).graph
    result = finetune_shared(shared, batches, torch.nn.CrossEntropyLoss(), epochs=2, optimizer="adam")
    result.graph  # every Codebook parameter: new centroids, the same indices

How: `train` runs as usual with one change, the optimizer. `finetune_shared`
hands it a `CentroidOptimizer` that holds, for every trainable parameter with a
`Codebook` encoding, its centroids as a tensor and its indices. At each step it
sums the dense weight's gradient per cluster (dL/dc_k = sum of dL/dw_i over the
weights i with index k: the chain rule through w = c[indices]), lets the inner
optimizer (sgd or adam, with `lr`, `momentum`, `weight_decay`) update the
centroids and every unshared parameter, and writes the weight back as
c[indices]. So the weight is centroids[indices] at every step, the forward pass
is the plain `to_torch()` module, and data parallelism, masks, frozen
parameters and teachers work as in `train`. Afterwards each such parameter gets
a new `Codebook` with the trained centroids and its old indices.

Why not train the dense weights and project back (replace each cluster by the
mean of its trained weights)? The mean of independently updated weights takes
the *averaged* gradient, a step smaller by the cluster size, and with Adam each
weight keeps its own moments, so the projected step is not the step of any
optimizer on the centroids; between projections the weights also leave the
codebook, so the model trained is not the model stored. Summing is the exact
gradient of the shared model (Han et al., 2016, section 3.3).

Centroids that pruned (masked) entries use stay fixed (they are exactly zero),
so sparsity and the zero code survive fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from graphopt.errors import TrainError
from graphopt.ir.encodings import Codebook
from graphopt.ir.graph import Graph
from graphopt.ir.types import from_torch_tensor
from graphopt.train.loop import TrainResult, train

__all__ = ["finetune_shared", "CentroidOptimizer", "SharedWeight"]


@dataclass
class SharedWeight:
    """A parameter held as centroids[indices] while training."""

    name: str
    weight: nn.Parameter  # the module's dense weight, rewritten after every step
    centroids: nn.Parameter  # [k], what the inner optimizer trains
    indices: torch.Tensor  # int64, flat
    fixed: torch.Tensor  # bool [k]: centroids of masked entries, kept as they are
    fixed_values: torch.Tensor


class CentroidOptimizer(torch.optim.Optimizer):
    """Per-cluster summed gradients for the shared weights; an inner optimizer for the centroids and the rest."""

    def __init__(
        self,
        params: list[nn.Parameter],
        shared: list[SharedWeight],
        make_inner: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    ):
        super().__init__(params, {})
        self.shared = shared
        ids = {id(s.weight) for s in shared}
        self.inner = make_inner([p for p in params if id(p) not in ids] + [s.centroids for s in shared])

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self.inner.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for s in self.shared:
            grad = s.weight.grad
            if grad is None:
                s.centroids.grad = None
                continue
            summed = torch.zeros_like(s.centroids).index_add_(0, s.indices, grad.reshape(-1).to(s.centroids.dtype))
            s.centroids.grad = summed.masked_fill_(s.fixed, 0.0)
        self.inner.step()
        for s in self.shared:
            s.centroids[s.fixed] = s.fixed_values
            s.weight.copy_(s.centroids[s.indices].reshape(s.weight.shape))
        return loss


def finetune_shared(
    graph: Graph,
    data: Iterable,
    loss_fn: Callable[..., torch.Tensor],
    *,
    optimizer: str | Callable[[list[nn.Parameter]], torch.optim.Optimizer] = "sgd",
    lr: float | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    **train_kw,
) -> TrainResult:
    """`train` with every trainable `Codebook` parameter trained through its centroids; a new graph, re-encoded.

    optimizer, lr, momentum, weight_decay: the inner optimizer, as in `train` (a callable
    gets the centroids and the unshared parameters). Other keywords go to `train`.
    """
    names = [n for n, p in graph.params.items() if p.trainable and isinstance(p.encoding, Codebook)]
    if not names:
        raise TrainError(
            f"finetune_shared: graph '{graph.name}' has no trainable parameter with a Codebook encoding "
            f"(run share-weights or quantize-lut first)"
        )
    if "optimizer" in train_kw:
        raise TrainError("finetune_shared: pass the optimizer once")
    order = _trainable_order(graph, train_kw.get("impls"))
    factory = _Factory(graph, names, order, _inner_factory(optimizer, lr, momentum, weight_decay, optimizer == "adam"))
    result = train(graph, data, loss_fn, optimizer=factory, **train_kw)
    for s in factory.optimizer.shared:
        dtype = graph.params[s.name].data.dtype.name
        result.graph.set_encoding(
            s.name, Codebook(from_torch_tensor(s.centroids, dtype), graph.params[s.name].encoding.indices)
        )
    return result


class _Factory:
    """Called by `train` with the module's trainable parameters (in `order`); builds the optimizer."""

    def __init__(self, graph: Graph, names: list[str], order: list[str], make_inner):
        self.graph, self.names, self.order, self.make_inner = graph, names, order, make_inner
        self.optimizer: CentroidOptimizer | None = None

    def __call__(self, params: list[nn.Parameter]) -> CentroidOptimizer:
        order = self.order
        if len(order) != len(params):
            raise TrainError(
                f"finetune_shared: expected {len(order)} trainable parameters, the module has {len(params)}"
            )
        by_name = dict(zip(order, params))
        shared = [self._shared(name, by_name[name]) for name in self.names]
        self.optimizer = CentroidOptimizer(params, shared, self.make_inner)
        return self.optimizer

    def _shared(self, name: str, weight: nn.Parameter) -> SharedWeight:
        p = self.graph.params[name]
        if tuple(weight.shape) != p.data.shape or not np.array_equal(
            from_torch_tensor(weight, p.data.dtype.name), p.data
        ):
            raise TrainError(f"finetune_shared: the module's parameter for '{name}' does not hold its data")
        book: Codebook = p.encoding
        device = weight.device
        centroids = nn.Parameter(torch.from_numpy(np.array(book.centroids)).to(device=device, dtype=weight.dtype))
        indices = torch.from_numpy(book.indices.astype(np.int64).reshape(-1)).to(device)
        fixed = torch.zeros(book.centroids.size, dtype=torch.bool, device=device)
        if p.mask is not None:
            fixed[torch.from_numpy(np.unique(book.indices[~p.mask]).astype(np.int64)).to(device)] = True
        return SharedWeight(name, weight, centroids, indices, fixed, centroids.detach()[fixed].clone())


def _trainable_order(graph: Graph, impls) -> list[str]:
    """Graph names of the module's trainable parameters in `module.parameters()` order (fx orders them by first use)."""
    module = graph.to_torch(impls=impls)
    names = {attr: name for name, attr in module.param_names.items()}
    return [names[attr] for attr, p in module.named_parameters() if p.requires_grad]


def _inner_factory(spec, lr, momentum, weight_decay, adam: bool):
    if callable(spec):
        return spec
    if spec not in ("sgd", "adam"):
        raise TrainError(f"finetune_shared: optimizer {spec!r} is not 'sgd', 'adam' or a callable")
    if adam and momentum:
        raise TrainError("finetune_shared: momentum is an SGD option (adam's moments are its betas)")
    lr = (1e-3 if adam else 1e-2) if lr is None else lr
    if not lr > 0:
        raise TrainError(f"finetune_shared: lr must be positive, got {lr!r}")
    if adam:
        return lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay)
    return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=weight_decay)
