"""Parameter accounting: every parameter in elements and bytes, as it would be stored.

Bytes are storage bytes: sub-byte dtypes packed (int4: half a byte per element),
encoded parameters at their encoding's size (a codebook: centroids plus indices
at their bit width), everything else at its dtype's size. Sparsity is what the
mask prunes; storing only the kept entries is a storage format's choice, so it
is reported, not subtracted. The cost analyses (MACs, latency) build on this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from graphopt.ir.types import TensorType

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Parameter


@dataclass(frozen=True)
class ParamCount:
    name: str
    elements: int
    nbytes: int
    dtype: str
    bits: float  # storage bits per element
    sparsity: float
    trainable: bool
    encoding: str | None  # the encoding's description, None when dense


@dataclass(frozen=True)
class ParamSummary:
    params: tuple[ParamCount, ...]

    @property
    def elements(self) -> int:
        return sum(p.elements for p in self.params)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.params)

    @property
    def trainable_elements(self) -> int:
        return sum(p.elements for p in self.params if p.trainable)

    def by_dtype(self) -> dict[str, tuple[int, int]]:
        """dtype -> (elements, bytes)."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.params:
            e, b = out.get(p.dtype, (0, 0))
            out[p.dtype] = (e + p.elements, b + p.nbytes)
        return dict(sorted(out.items()))


def count_param(name: str, p: "Parameter") -> ParamCount:
    t = TensorType.of(p.data)
    nbytes = int(p.encoding.nbytes) if p.encoding is not None else t.nbytes
    elements = int(p.data.size)
    return ParamCount(
        name,
        elements,
        nbytes,
        t.dtype,
        8.0 * nbytes / max(elements, 1),
        p.sparsity,
        p.trainable,
        None if p.encoding is None else p.encoding.describe(),
    )


def count_params(graph: "Graph") -> ParamSummary:
    """Every parameter of `graph` (trainable or not), in graph parameter order."""
    return ParamSummary(tuple(count_param(name, p) for name, p in graph.params.items()))
