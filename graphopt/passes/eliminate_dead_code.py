"""eliminate-dead-code: remove nodes and parameters that no graph output depends on.

A thin pass over `Graph.cleanup`, which never removes graph inputs or outputs
(an unused graph input stays: it is part of the model's signature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphopt.ir.graph import Graph
from graphopt.passes.base import Pass, PassResult
from graphopt.passes.context import PassContext
from graphopt.passes.registry import register_pass


@register_pass
@dataclass(frozen=True)
class EliminateDeadCode(Pass):
    """Remove dead nodes and parameters. Stats: `nodes` and `params` removed."""

    name: ClassVar[str] = "eliminate-dead-code"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        removed = graph.cleanup()
        changed = removed["nodes"] + removed["params"] > 0
        return PassResult(graph, changed, {"nodes": removed["nodes"], "params": removed["params"]})
