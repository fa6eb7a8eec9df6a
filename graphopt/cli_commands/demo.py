"""The end-to-end tour on a bundled model.

Builds a bundled model (by default a small CNN trained for a few seconds on
scikit-learn's handwritten digits, real data), traces it into the graphopt IR,
runs the exact cleanup pipeline with the numerical verifier on, prints op
counts and accuracy/outputs before and after, writes the optimized model as
ONNX and checks that onnxruntime computes the same outputs from that file, then
compiles it with TVM for this machine and checks the compiled code too.

Other bundled models (resnet18, mobilenet_v2, vit_small, bert_small) get seeded
random weights and inputs, so only outputs are compared for them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphopt.defaults import DEFAULT_PIPELINE, DEFAULT_TARGET, pipeline_text

HELP = "trace, optimize, export, compile and check a bundled model (default: a CNN trained on digits)"
DIGITS_MODELS = ("digits_cnn", "digits_mlp")
ATOL = 1e-4  # the cleanup passes are exact; float reassociation stays far below this


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="digits_cnn",
        help="bundled model: digits_cnn (default), digits_mlp, resnet18, mobilenet_v2, vit_small, bert_small",
    )
    parser.add_argument(
        "--pipeline", "-p", default=DEFAULT_PIPELINE, help=f"pass pipeline (default: '{DEFAULT_PIPELINE}')"
    )
    parser.add_argument(
        "--out", default="out/demo", metavar="DIR", help="where model.onnx is written (default: out/demo)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs for digits models (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data split and inputs")
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help=f"TVM target to compile for and run here (default: {DEFAULT_TARGET})"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the TVM build")


@dataclass
class EvalSet:
    """Inputs to compare on (one tuple of arrays per sample) and labels when the data is real."""

    samples: list[tuple[np.ndarray, ...]]
    labels: np.ndarray | None
    description: str


def run(args: argparse.Namespace) -> int:
    import torch

    # Batch-1 inference on small models: one thread avoids thread-pool overhead and contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from graphopt.backends.torch import run_module
    from graphopt.cli_commands.common import op_count_table
    from graphopt.errors import GraphoptError
    from graphopt.frontends.fx import trace
    from graphopt.models import list_models
    from graphopt.passes import PassContext, Pipeline, default_instruments

    progress = args.progress
    if args.model not in list_models():
        raise GraphoptError(f"unknown model '{args.model}'; bundled models: {', '.join(list_models())}")
    pipeline = Pipeline.parse(pipeline_text(args.pipeline))
    out_path = Path(args.out) / "model.onnx"

    model, example, data = _build(args, progress)
    with progress.step(f"tracing {args.model} with torch.export"):
        graph = trace(model, example)
    progress.log(f"running {pipeline} (numerically verified after each pass)")
    result = pipeline.run(graph, PassContext(instruments=default_instruments(), seed=args.seed, log=progress.log))
    optimized = result.graph

    print(f"== {args.model}: {pipeline}")
    print(result.report())
    print()
    print(op_count_table(graph, optimized))
    print(f"parameters: {graph.num_parameters():,} -> {optimized.num_parameters():,}")

    with progress.step(f"writing {out_path} and loading it in onnxruntime"):
        optimized.save_onnx(out_path)
        ort_run = _ort_runner(out_path)
    runners = {  # each maps a list of input arrays to a list of output arrays
        "torch model (eager)": lambda xs: run_module(model, xs),
        "traced graph": graph.run,
        "optimized graph": optimized.run,
        "onnxruntime (model.onnx)": ort_run,
    }
    if not args.no_compile:
        runners[f"TVM {args.target} (compiled)"] = _tvm_runner(optimized, args, progress)
    with progress.step(f"comparing outputs on {data.description}"):
        outputs = {name: _predict(fn, data) for name, fn in runners.items()}
    print()
    print(_comparison(outputs, data, len(graph.nodes), len(optimized.nodes)))

    reference = outputs["torch model (eager)"]
    bad = [name for name, out in outputs.items() if _max_diff(out, reference) > ATOL]
    if bad:
        raise GraphoptError(f"demo check failed: {', '.join(bad)} differ from the torch model by more than {ATOL:g}")
    checked = "onnxruntime" if args.no_compile else f"onnxruntime and TVM ({Path(args.out) / 'model.so'})"
    print(
        f"\nwrote {out_path}: same outputs as the torch model (max |diff| <= {ATOL:g}) "
        f"in {checked}, {len(graph.nodes)} -> {len(optimized.nodes)} nodes"
    )
    return 0


def _build(args: argparse.Namespace, progress):
    """(model in eval mode, example inputs for tracing, evaluation set)."""
    from graphopt.models import get_model

    model, example = get_model(args.model, batch_size=1, seed=args.seed)
    if args.model not in DIGITS_MODELS:
        import torch

        from graphopt.models import get_spec

        gen = torch.Generator().manual_seed(args.seed + 1)
        samples = [tuple(t.numpy() for t in get_spec(args.model).inputs(model, 1, gen)) for _ in range(4)]
        return model, example, EvalSet(samples, None, f"{len(samples)} seeded random inputs")

    from graphopt.errors import GraphoptError
    from graphopt.models import load_digits_data, train_digits_model

    with progress.step(f"training {args.model} on scikit-learn's digits ({args.epochs} epochs)"):
        try:
            data = load_digits_data(seed=args.seed)
        except ImportError as e:
            raise GraphoptError(
                f"the digits demo needs scikit-learn ({e}); install it with: pip install -e '.[data]'"
            ) from e
        train_digits_model(model, epochs=args.epochs, seed=args.seed, data=data)
    x = data.x_test.flatten(1) if args.model == "digits_mlp" else data.x_test
    samples = [(row[None].numpy(),) for row in x]  # batch 1, as traced
    return model, example, EvalSet(samples, data.y_test.numpy(), f"{len(samples)} held-out digit images")


def _tvm_runner(graph, args: argparse.Namespace, progress) -> Callable[[Sequence[np.ndarray]], list]:
    from graphopt.backends.tvm.compiled import compile_graph

    with progress.step(f"compiling with TVM for {args.target}"):
        compiled = compile_graph(graph, args.target, pipeline=pipeline_text(args.pipeline))
    path = Path(args.out) / "model.so"
    compiled.save(path)
    progress.log(f"  saved {path} (+ {path.name}.json)")
    return lambda xs: [compiled(*xs)]


def _ort_runner(path: Path) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    from graphopt.backends.onnxruntime import ort_session

    session = ort_session(path, threads=1)
    names = [i.name for i in session.get_inputs()]
    return lambda xs: list(session.run(None, dict(zip(names, xs))))


def _predict(fn: Callable[[Sequence[np.ndarray]], list[np.ndarray]], data: EvalSet) -> np.ndarray:
    """First output of `fn` on every sample, concatenated along the batch axis."""
    return np.concatenate([np.asarray(fn(list(xs))[0], dtype=np.float64) for xs in data.samples])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")


def _comparison(outputs: dict[str, np.ndarray], data: EvalSet, nodes_before: int, nodes_after: int) -> str:
    from graphopt.cli_commands.common import format_table

    reference = outputs["torch model (eager)"]
    nodes = {"traced graph": nodes_before, "optimized graph": nodes_after, "onnxruntime (model.onnx)": nodes_after}
    nodes.update({name: nodes_after for name in outputs if name.startswith("TVM")})
    header = ("", "nodes") + (("accuracy",) if data.labels is not None else ()) + ("max |diff| vs torch",)
    rows = [header]
    for name, out in outputs.items():
        row = [name, str(nodes.get(name, "-"))]
        if data.labels is not None:
            row.append(f"{np.mean(out.argmax(-1) == data.labels):.2%}")
        row.append("-" if out is reference else f"{_max_diff(out, reference):.2e}")
        rows.append(tuple(row))
    return format_table(rows)
