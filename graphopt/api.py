"""`graphopt.optimize`: import, rewrite, (tune,) lower and build a model in one call.

compiled = graphopt.optimize(model, example_inputs=(x,), target="arm",
                             pipeline="fold-bn,prune-channels{ratio=0.5}")
compiled.save("model.so")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from graphopt.analysis.compare import compare_graphs
from graphopt.backends.torch import to_tensor
from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_TARGET, pipeline_text
from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.passes import Pipeline, default_instruments
from graphopt.passes.manager import PipelineResult

if TYPE_CHECKING:
    from graphopt.backends.tvm.compiled import CompiledModel


logger = logging.getLogger("graphopt")

ModelLike = torch.nn.Module | onnx.ModelProto | Graph | str | os.PathLike


def import_model(
    model: ModelLike,
    example_inputs: Sequence | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int | str]] | None = None,
    dynamic_batch: bool = False,
) -> Graph:
    """A Graph from an nn.Module (traced on `example_inputs`), an ONNX file or proto, or a Graph.

    input_shapes ({"x": ("N", 3, 224, 224)}) / dynamic_batch: input shapes, static or with a symbolic
    batch (`graphopt.shapes`); for an nn.Module static dims must match the example inputs, and a
    symbol is traced by torch.export as a Dim.
    """
    shaped = bool(input_shapes) or dynamic_batch
    if isinstance(model, Graph):
        if shaped:
            raise GraphoptError("input_shapes/dynamic_batch apply on import: pass the ONNX file or the module")
        return model
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        from graphopt.frontends.onnx import load_onnx

        return load_onnx(model, input_shapes=input_shapes, dynamic_batch=dynamic_batch)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise GraphoptError(f"tracing {type(model).__name__} needs example_inputs=(x, ...)")
        from graphopt.frontends.fx import trace

        examples = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
        return trace(model, examples, input_shapes=input_shapes, dynamic_batch=dynamic_batch)
    raise GraphoptError(
        f"cannot import a {type(model).__name__}: pass an nn.Module, an ONNX path or ModelProto, or a graphopt Graph"
    )


def run_pipeline_on(
    graph: Graph,
    pipeline: str | Pipeline | None,
    *,
    example_inputs=None,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
    calibration: Iterable[Sequence[np.ndarray]] | None = None,
    notice: Callable[[str], None] | None = None,
) -> tuple[Graph, Pipeline]:
    """Run `pipeline` (None or "default" = DEFAULT_PIPELINE, "" = none) on a copy of `graph`.

    calibration: input sets (each in graph-input order) for passes that calibrate.
    notice: called once with a warning when a pass calibrates on seeded random
        inputs because no calibration data was given.
    """
    result, pipe = _run_pipeline(graph, pipeline, example_inputs, verify, log, calibration, notice)
    return result.graph, pipe


def _run_pipeline(graph, pipeline, example_inputs, verify, log, calibration, notice) -> tuple[PipelineResult, Pipeline]:
    from graphopt.quant.calibration_data import NoticingContext

    pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline_text(pipeline))
    inputs = None
    if example_inputs is not None:
        xs = example_inputs if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
        inputs = [[to_tensor(x).detach().numpy() for x in xs]]
    ctx = NoticingContext(
        instruments=default_instruments(verify=verify), inputs=inputs, calibration=calibration, log=log, notice=notice
    )
    return pipe.run(graph, ctx), pipe


def optimize(
    model: ModelLike,
    example_inputs: Sequence | None = None,
    *,
    target: Any = DEFAULT_TARGET,
    pipeline: str | Pipeline | None = None,
    tune: int = 0,
    db: str | os.PathLike | None = None,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
    calibration: Iterable[Sequence[np.ndarray]] | None = None,
    notice: Callable[[str], None] | None = None,
    input_shapes: Mapping[str, Sequence[int | str]] | None = None,
    dynamic_batch: bool = False,
) -> "CompiledModel":
    """Compile `model` for `target` ("x86", "arm", "cuda", ... or a TVM target dict).

    pipeline: pass pipeline text or a Pipeline; None or "default" runs DEFAULT_PIPELINE.
    tune: MetaSchedule trials; records go to (and resume from) the directory `db`.
    db without tune: reuse an existing tuning database for the build.
    Neither: the tuning records shipped for the bundled models apply where a
    kernel's workload and the target match (``backends/tvm/shipped.py``).
    verify: check every pass numerically against the graph before it.
    calibration, notice: as in `run_pipeline_on`.
    input_shapes, dynamic_batch: as in `import_model`; with a symbolic batch ("N") one build
    runs any batch size, and the compiled model checks the other dims.
    The user's model is never modified. When the pipeline changed it, `compiled.comparison`
    (`analysis.compare.Comparison`) holds params, MACs and weight bytes before and after, also
    logged at INFO on the "graphopt" logger; otherwise it is None.
    """
    from graphopt.backends.tvm.compiled import compile_graph
    from graphopt.backends.tvm.targets import resolve_target

    tgt = resolve_target(target)  # an unknown target fails before any work
    if tune and db is None:
        raise GraphoptError("tune=N needs db=DIR: the directory that keeps (and resumes) tuning records")
    source = import_model(model, example_inputs, input_shapes=input_shapes, dynamic_batch=dynamic_batch)
    result, pipe = _run_pipeline(source, pipeline, example_inputs, verify, log, calibration, notice)
    graph = result.graph
    database = _database(graph, tgt, tune, db)
    shipped = None
    if db is None:  # no database asked for: graphopt's shipped records, where workload and target match
        from graphopt.backends.tvm.shipped import shipped_database

        database = shipped = shipped_database(tgt)
    compiled = compile_graph(graph, tgt, database=database, pipeline=str(pipe))
    if shipped is not None:
        shipped.report(log, notice)
    if result.changed:
        compiled.comparison = compare_graphs(source, graph)
        logger.info("graphopt.optimize: %s changed the model:\n%s", pipe, compiled.comparison.table())
    return compiled


def _database(graph: Graph, target, trials: int, db):
    from graphopt.backends.tvm.tuning import load_database, print_progress, tune

    if trials:
        from graphopt.backends.tvm.lower import lower_to_relax

        return tune(lower_to_relax(graph), target, Path(db), trials, progress=print_progress)
    if db is not None:
        return load_database(Path(db), target)
    return None


def load_compiled(path: str | os.PathLike) -> "CompiledModel":
    """Load a model written by `CompiledModel.save` (the library plus its .json metadata)."""
    from graphopt.backends.tvm.compiled import load_compiled as _load

    return _load(path)


__all__ = ["optimize", "load_compiled", "import_model", "DEFAULT_PIPELINE"]
