"""prune-heads: remove whole attention heads.

A head is the query, key and value columns that meet in one slice of the
attention scores, plus the output projection's columns that read it (fused
qkv or three projections alike); the head reshape's sizes shrink with it.

    before: linear(x, qkv[384,128]) -> reshape{[0,0,3,4,32]} -> ... -> linear(., proj[128,128])
    after:  linear(x, qkv[288,128]) -> reshape{[0,0,3,3,32]} -> ... -> linear(., proj[128,96])   (ratio=0.25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.passes.registry import register_pass
from graphopt.passes.structured_prune import OPTIONS_DOC, StructuredPrune


@register_pass
@dataclass(frozen=True)
class PruneHeads(StructuredPrune):
    __doc__ = "Remove `ratio` of the attention heads of each attention block.\n" + OPTIONS_DOC

    name: ClassVar[str] = "prune-heads"
    kinds: ClassVar[tuple[str, ...]] = ("heads",)
    unit_word: ClassVar[str] = "heads"
