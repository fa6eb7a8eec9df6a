"""prune-channels: remove the least important channels of every conv / linear dependency group.

A group is a set of channels that must go together (a conv's outputs with the
batch norm after it, every conv feeding the same residual sum, the columns of
the layers that read them); `analysis.dependency` finds them and says why a
group is left whole. Attention heads are pruned by prune-heads.

    before: conv(x, w[64,3,3,3]) -> batch_norm -> relu -> conv(., w2[128,64,3,3])
    after:  conv(x, w[32,3,3,3]) -> batch_norm -> relu -> conv(., w2[128,32,3,3])   (ratio=0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.passes.registry import register_pass
from graphopt.passes.structured_prune import OPTIONS_DOC, StructuredPrune


@register_pass
@dataclass(frozen=True)
class PruneChannels(StructuredPrune):
    __doc__ = "Remove `ratio` of the channels of each conv/linear group (or of all, ranked globally).\n" + OPTIONS_DOC

    name: ClassVar[str] = "prune-channels"
    kinds: ClassVar[tuple[str, ...]] = ("channels", "ffn")
