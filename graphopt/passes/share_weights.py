"""share-weights: k-means weight sharing (Deep Compression): each weight becomes one of `clusters` shared values.

    before: @fc.weight: f32[10,64]
    after:  @fc.weight: f32[10,64]  (encoding=codebook(k=16, 4-bit indices))     share-weights{clusters=16}

Each target (conv/linear weights and matmul parameter operands; `include` and
`ignore` as in `weight_targets`) is clustered by 1-d Lloyd k-means
(`graphopt.quant.kmeans`: deterministic, seeded) and stored as a `Codebook`
encoding, `data = centroids[indices]`, so its storage is k centroids plus
ceil(log2 k)-bit indices. `scope=layer` clusters each parameter alone;
`scope=global` runs one k-means over all targets and gives them the same centroids.
`init`: `linear` (Deep Compression's choice: evenly over [min, max], so the few
large weights keep their own centroids), `quantile`, or `kmeans++` (seeded by `seed`).

A masked parameter (after prune-magnitude) keeps its zeros: pruned entries take
a centroid fixed at exactly zero and the kept weights share the other
clusters - 1, so indices stay at ceil(log2 clusters) bits. A parameter with
fewer distinct values than `clusters` gets one centroid per value. Parameters
that already hold an encoding are left alone, so a second run changes nothing.

Fine-tuning the centroids (gradients summed per cluster) is
`graphopt.train.finetune_shared`. Stats: `layers` shared, `bits` per index,
`bytes` of the targets before -> after, `min_weight_sqnr_db` over the layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult, Tolerance, sqnr_db
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.weight_targets import WeightTarget, check_options, weight_targets
from graphopt.quant.kmeans import codebook, kmeans_1d


@register_pass
@dataclass(frozen=True)
class ShareWeights(Pass):
    """Cluster each weight tensor into `clusters` shared values (a codebook encoding)."""

    name: ClassVar[str] = "share-weights"
    clusters: int = 16
    init: Literal["linear", "quantile", "kmeans++"] = "linear"
    scope: Literal["layer", "global"] = "layer"
    seed: int = 0
    iterations: int = 100
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        if self.clusters < 2:
            raise ValueError(f"{self.name}: clusters must be >= 2, got {self.clusters}")
        if self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be >= 1, got {self.iterations}")
        check_options(self.name, self.include)

    def tolerance(self) -> Tolerance:
        return codebook_tolerance(self.clusters)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return share(
            graph, self, self.clusters, init=self.init, scope=self.scope, seed=self.seed, iterations=self.iterations
        )


def codebook_tolerance(k: int) -> Tolerance:
    """Output SQNR bound for k shared values per layer.

    Lloyd-Max on Gaussian weights gives ~6 dB per index bit less ~4 dB (16 levels: 20 dB);
    each layer adds its error and nonlinearities amplify it, so the bound keeps a 12 dB margin
    (16 values: >= 8 dB; 4 or fewer: unchecked, top-1 and accuracy are what matter there).
    """
    bound = 6.02 * np.log2(k) - 16.0
    return Tolerance.bounded(min_sqnr_db=round(float(bound), 1)) if bound > 0 else Tolerance.bounded()


def share(graph: Graph, pass_: Pass, k: int, *, init: str, scope: str, seed: int, iterations: int) -> PassResult:
    """Give every target of `pass_` (its include / ignore) a k-value codebook: share-weights' and quantize-lut's run."""
    targets = weight_targets(graph, pass_.name, pass_.include, pass_.ignore)
    skipped = {t.param: "already encoded" for t in targets if graph.param(t.param).encoding is not None}
    targets = [t for t in targets if t.param not in skipped]
    for t in targets:
        size = graph.param(t.param).data.size
        if k > size:
            raise PassError(f"{pass_.name}: {t.where()} has {size} weights, fewer than the {k} clusters asked")
    shared = _global_centroids(graph, targets, k, init, seed, iterations) if scope == "global" and targets else None
    before = after = 0
    sqnrs = []
    for t in targets:
        p = graph.param(t.param)
        book = codebook(p.data, p.mask, k, init=init, seed=seed, max_iter=iterations, centroids=shared)
        before += p.data.nbytes
        after += book.nbytes
        sqnrs.append(sqnr_db(p.data, book.decode()))
        graph.set_encoding(t.param, book)
    stats: dict[str, Any] = {"layers": len(targets), "bits": max(1, math.ceil(math.log2(k)))}
    if targets:
        stats["bytes"] = f"{before}->{after}"
        stats["min_weight_sqnr_db"] = round(min(sqnrs), 2)
    if skipped:
        stats["skipped"] = skipped
    return PassResult(graph, bool(targets), stats)


def _global_centroids(
    graph: Graph, targets: list[WeightTarget], k: int, init: str, seed: int, iterations: int
) -> np.ndarray:
    """One k-means over the kept weights of every target (k - 1 learned values when any target is masked)."""
    kept = []
    masked = False
    for t in targets:
        p = graph.param(t.param)
        masked |= p.mask is not None and not p.mask.all()
        kept.append(p.data[p.mask] if p.mask is not None else p.data.reshape(-1))
    centroids, _ = kmeans_1d(np.concatenate(kept), k - 1 if masked else k, init=init, seed=seed, max_iter=iterations)
    return centroids
