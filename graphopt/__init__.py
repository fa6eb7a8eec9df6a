"""graphopt: a compiler for neural-network compression.

    import graphopt
    graph = graphopt.trace(model, example_inputs)      # or graphopt.load_onnx("model.onnx")
    result = graphopt.Pipeline.parse("fold-bn,eliminate-dead-code").run(graph)
    result.graph.save_onnx("model.opt.onnx")

The names below are imported on first use, so `import graphopt` stays fast
(torch is loaded only when a model is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "trace": "graphopt.frontends.fx",
    "load_onnx": "graphopt.frontends.onnx",
    "Graph": "graphopt.ir.graph",
    "Pipeline": "graphopt.passes.pipeline",
    "PassContext": "graphopt.passes.context",
    "optimize": "graphopt.api",
    "load_compiled": "graphopt.api",
    "load_compressed": "graphopt.storage",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from graphopt.api import load_compiled, optimize
    from graphopt.frontends.fx import trace
    from graphopt.frontends.onnx import load_onnx
    from graphopt.ir.graph import Graph
    from graphopt.passes.context import PassContext
    from graphopt.passes.pipeline import Pipeline
    from graphopt.storage import load_compressed


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphopt' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
