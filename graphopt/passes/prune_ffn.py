"""prune-ffn: narrow the hidden layer of transformer feed-forward blocks (linear -> activation -> linear).

before: linear(x, fc1[512,128]) -> gelu -> linear(., fc2[128,512])
after:  linear(x, fc1[256,128]) -> gelu -> linear(., fc2[128,256])   (ratio=0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.passes.registry import register_pass
from graphopt.passes.structured_prune import OPTIONS_DOC, StructuredPrune


@register_pass
@dataclass(frozen=True)
class PruneFfn(StructuredPrune):
    __doc__ = "Remove `ratio` of the hidden units of each feed-forward block.\n" + OPTIONS_DOC

    name: ClassVar[str] = "prune-ffn"
    kinds: ClassVar[tuple[str, ...]] = ("ffn",)
