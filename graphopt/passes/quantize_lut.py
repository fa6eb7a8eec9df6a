"""quantize-lut: non-uniform `bits`-bit weights through a per-layer lookup table of 2^bits levels.

    before: @fc.weight: f32[10,64]
    after:  @fc.weight: f32[10,64]  (encoding=codebook(k=8, 3-bit indices))      quantize-lut{bits=3}

Uniform int-b quantization spends its levels evenly over [-max, max]; weights
are bell-shaped, so most levels sit where few weights are. Here each layer gets
its own table of 2^bits levels placed by the Lloyd-Max quantizer: 1-d k-means
(`graphopt.quant.kmeans`) started at equal-population quantiles, which is the
minimum-squared-error scalar quantizer of the layer's weights (quantiles alone
are equal-population, not minimum-error; k-means from quantiles converges in a
few iterations and needs no seed). The result is a `Codebook` encoding (the
table is the centroids, the codes are `bits`-bit indices), decoded by a table
lookup; `graphopt.train.finetune_shared` fine-tunes the table.

Compared with share-weights, which takes any number of clusters, Deep
Compression's linear init and an optional global codebook, this pass is the
fixed-width quantizer: `bits` in 1..8, one table per layer. Masked parameters
keep an exact zero level (one of the 2^bits); encoded parameters are left
alone, so a second run changes nothing; targets, `include` and `ignore` as in
`weight_targets`. Stats as share-weights'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass
from graphopt.passes.share_weights import codebook_tolerance, share
from graphopt.passes.weight_targets import check_options


@register_pass
@dataclass(frozen=True)
class QuantizeLut(Pass):
    """Quantize each weight tensor to 2^bits levels of its own lookup table (Lloyd-Max)."""

    name: ClassVar[str] = "quantize-lut"
    bits: int = 4
    iterations: int = 100
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        if not 1 <= self.bits <= 8:
            raise ValueError(f"{self.name}: bits must lie in 1..8, got {self.bits}")
        if self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be >= 1, got {self.iterations}")
        check_options(self.name, self.include)

    def tolerance(self) -> Tolerance:
        return codebook_tolerance(2**self.bits)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return share(graph, self, 2**self.bits, init="quantile", scope="layer", seed=0, iterations=self.iterations)
