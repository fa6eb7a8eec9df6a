"""Structured pruning: graphopt against Torch-Pruning on the same models and ratios, in one run.

For every model and channel ratio, each tool prunes its own copy:
- graphopt: `graphopt.trace(model, x)`, then `prune-channels{ratio=R}` (and
  `prune-heads{ratio=R}` for the transformers);
- Torch-Pruning: `tp.pruner.MetaPruner` with `GroupMagnitudeImportance(p=1)`,
  `pruning_ratio=R`, the last Linear (the classifier) ignored; for attention,
  `num_heads` per q/k/v (or fused qkv) Linear, `prune_num_heads=True`,
  `prune_head_dims=False`, `head_pruning_ratio=R`, and the modules' head counts
  updated afterwards, as its ViT / BERT examples do.

Reported per tool: whether it prunes the model at all (an exception, a model
that no longer runs or changes its output shape, or nothing removed, each with
the short reason), MACs and params kept (graphopt's cost on both pruned models,
so one counter compares them, plus Torch-Pruning's own `count_ops_and_params`),
wall time to prune (graphopt: trace + passes; Torch-Pruning: pruner + step),
and batch-1 latency before and after in onnxruntime (2 intra-op threads; the
four sessions of a model timed round-robin, so load drifts hit them alike) and
in untuned TVM (x86; both pruned models built through graphopt; `--tvm-models`). The goal
column is speedup / MACs reduction (goal >= 0.8).

Then accuracy on sklearn digits: the digits CNN trained once, pruned by each
tool at each ratio, fine-tuned identically (same batches in the same order,
Adam, same lr and epochs, batch-norm statistics frozen on both sides since
graphopt's batch_norm is the inference form), test accuracy before and after.

    python benchmarks/pruning.py                        # everything, ratios 0.3 and 0.5
    python benchmarks/pruning.py --models residual --ratios 0.5 --no-tvm --runs 5 --no-digits
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graphopt.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("digits_cnn", "resnet18", "mobilenet_v2", "vit_small", "bert_small")
TRANSFORMERS = ("vit_small", "bert_small", "attention_fused", "attention_split")
DEFAULT_MODELS = BUNDLED + (
    "residual",
    "concat_split",
    "grouped_depthwise",
    "flatten_linear",
    "permute_linear",
    "channel_shuffle",
    "squeeze_excite",
    "token_mixer",
    "attention_fused",
    "attention_split",
)


def structures():
    """tests/prune_structures.py, the one definition of the structure models."""
    spec = importlib.util.spec_from_file_location("prune_structures", ROOT / "tests" / "prune_structures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode model and one batch-1 input."""
    if name in BUNDLED:
        from graphopt.models import get_model

        model, (x,) = get_model(name, batch_size=1, seed=0)
        return model, x
    ps = structures()
    if name not in ps.STRUCTURES:
        raise SystemExit(f"unknown model {name!r}; valid: {', '.join(DEFAULT_MODELS)}")
    with torch.random.fork_rng(devices=[]):
        model, x = ps.build(name)
    return model, x[:1]


# ---- the two tools -----------------------------------------------------------------------------


def graphopt_pipeline(name: str, ratio: float, round_to: int = 1) -> str:
    text = f"prune-channels{{ratio={ratio:g}" + (f" round-to={round_to}}}" if round_to > 1 else "}")
    return text + (f",prune-heads{{ratio={ratio:g}}}" if name in TRANSFORMERS else "")


def prune_graphopt(name: str, model: nn.Module, x: torch.Tensor, ratio: float, round_to: int = 1) -> dict:
    import graphopt
    from graphopt.passes import Pipeline

    start = time.perf_counter()
    graph = graphopt.trace(model, (x,))
    traced = time.perf_counter()
    result = Pipeline.parse(graphopt_pipeline(name, ratio, round_to)).run(graph)
    done = time.perf_counter()
    return {
        "base_graph": graph,
        "graph": result.graph,
        "seconds": done - start,
        "trace_seconds": traced - start,
        "run": lambda: result.graph.run([x.numpy()])[0],
    }


def _attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Linear -> head count, for the q/k/v (or fused qkv) projections of every attention module."""
    heads = {}
    for m in model.modules():
        count = getattr(m, "num_heads", getattr(m, "heads", None))
        if not isinstance(count, int):
            continue
        for attr in ("qkv", "q", "k", "v", "query", "key", "value"):
            if isinstance(getattr(m, attr, None), nn.Linear):
                heads[getattr(m, attr)] = count
    return heads


def _update_head_counts(model: nn.Module, pruner) -> None:
    """What Torch-Pruning's transformer examples do after `step()`: the modules' head counts follow the pruner."""
    for m in model.modules():
        for attr in ("qkv", "q", "query"):
            proj = getattr(m, attr, None)
            if proj in pruner.num_heads:
                count = pruner.num_heads[proj]
                if hasattr(m, "num_heads"):
                    m.num_heads = count
                    m.head_dim = proj.out_features // ((3 if attr == "qkv" else 1) * count)
                if hasattr(m, "heads"):
                    m.heads = count
                break


def prune_torch_pruning(name: str, model: nn.Module, x: torch.Tensor, ratio: float, round_to: int = 1) -> dict:
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    classifier = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
    heads = _attention_heads(pruned)
    options = {}
    if heads:
        options = dict(num_heads=heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            pruned,
            x,
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=[classifier],
            round_to=round_to if round_to > 1 else None,
            **options,
        )
        pruner.step()
    if heads:
        _update_head_counts(pruned, pruner)
    seconds = time.perf_counter() - start
    return {"model": pruned.eval(), "seconds": seconds, "run": lambda: _torch_run(pruned, x)}


def _torch_run(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def torch_onnx(model: nn.Module, x: torch.Tensor) -> bytes:
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17)
    return buf.getvalue()


def tp_count(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, params = tp.utils.count_ops_and_params(model, x)
    return float(macs), float(params)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:110]}"


# ---- latency -----------------------------------------------------------------------------------


def ort_call(onnx_bytes: bytes, x: np.ndarray) -> Callable[[], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feeds)[0]


def tvm_call(graph, x: np.ndarray) -> Callable[[], np.ndarray]:
    from graphopt.backends.tvm.compiled import compile_graph

    compiled = compile_graph(graph, "x86")
    return lambda: np.asarray(compiled(x))


def round_robin_ms(calls: dict[str, Callable], runs: int, warmup: int = 2) -> dict[str, float]:
    """Median ms of each call, timed in turns (one call of each per round) so load changes hit all alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in progress_bar(range(runs), desc="timing", unit="round"):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


# ---- one model at one ratio --------------------------------------------------------------------


def bench_model(name: str, ratio: float, args) -> list[dict]:
    """One row per tool: result, costs, time to prune, latencies."""
    import graphopt
    from graphopt.analysis.cost import graph_cost

    model, x = build(name)
    reference = _torch_run(model, x)
    load = os.getloadavg()[0]
    rows, pruned = [], {}
    for tool, prune in (("graphopt", prune_graphopt), ("torch-pruning", prune_torch_pruning)):
        row = {"model": name, "ratio": ratio, "tool": tool, "load": load}
        rows.append(row)
        try:
            out = prune(name, model, x, ratio, args.round_to)
        except Exception as e:
            row["result"] = f"fails: {_short(e)}"
            continue
        row["seconds"], row["trace_seconds"] = out["seconds"], out.get("trace_seconds")
        try:
            got = out["run"]()
        except Exception as e:
            row["result"] = f"fails: pruned model does not run: {_short(e)}"
            continue
        if got.shape != reference.shape:
            row["result"] = f"fails: output shape {list(got.shape)}, was {list(reference.shape)}"
            continue
        try:
            if tool == "graphopt":
                before, after = graph_cost(out["base_graph"]), graph_cost(out["graph"])
                out["tvm_before"], out["tvm_after"] = out["base_graph"], out["graph"]
                out["onnx_before"] = out["base_graph"].to_onnx().SerializeToString()
                out["onnx_after"] = out["graph"].to_onnx().SerializeToString()
            else:
                base_graph, after_graph = graphopt.trace(model, (x,)), graphopt.trace(out["model"], (x,))
                before, after = graph_cost(base_graph), graph_cost(after_graph)
                out["tvm_before"], out["tvm_after"] = base_graph, after_graph
                (row["tp_macs_before"], _), (row["tp_macs_after"], _) = tp_count(model, x), tp_count(out["model"], x)
                out["onnx_before"], out["onnx_after"] = torch_onnx(model, x), torch_onnx(out["model"], x)
        except Exception as e:
            row["result"] = f"fails: pruned model cannot be counted/exported: {_short(e)}"
            continue
        row.update(
            macs_before=before.macs, macs_after=after.macs, params_before=before.params, params_after=after.params
        )
        row["result"] = "prunes" if after.macs < before.macs or after.params < before.params else "nothing removed"
        pruned[tool] = out
    _measure(name, rows, pruned, x.numpy(), args)
    return rows


def _measure(name: str, rows: list[dict], pruned: dict, x: np.ndarray, args) -> None:
    by_tool = {r["tool"]: r for r in rows}
    calls = {}
    for tool, out in pruned.items():
        try:
            calls[(tool, "before")] = ort_call(out["onnx_before"], x)
            calls[(tool, "after")] = ort_call(out["onnx_after"], x)
        except Exception as e:
            by_tool[tool]["ort_error"] = _short(e)
            calls.pop((tool, "before"), None)
    for (tool, when), ms in round_robin_ms(calls, args.runs).items():
        by_tool[tool][f"ort_{when}"] = ms
    if args.no_tvm or not pruned or name not in args.tvm_models.split(","):
        return
    calls = {}
    try:  # one build of the unpruned model serves both tools
        calls["before"] = tvm_call(next(iter(pruned.values()))["tvm_before"], x)
    except Exception as e:
        for tool in pruned:
            by_tool[tool]["tvm_error"] = f"unpruned model: {_short(e)}"
        return
    for tool, out in pruned.items():
        try:
            calls[tool] = tvm_call(out["tvm_after"], x)
        except Exception as e:
            by_tool[tool]["tvm_error"] = _short(e)
    times = round_robin_ms(calls, args.tvm_runs, warmup=1)
    for tool in pruned:
        if tool in times:
            by_tool[tool].update(tvm_before=times["before"], tvm_after=times[tool])


def warm_up() -> None:
    """Prune a small model with each tool once, so neither tool's timing pays for first-call imports."""
    model, x = build("residual")
    prune_graphopt("residual", model, x, 0.5)
    prune_torch_pruning("residual", model, x, 0.5)


# ---- accuracy on digits ------------------------------------------------------------------------


def digits_accuracy(ratios: list[float], args) -> list[dict]:
    """Train the digits CNN once; per tool and ratio: accuracy pruned, and after the same fine-tuning."""
    import graphopt
    from graphopt.analysis.cost import graph_cost
    from graphopt.models.digits import DigitsCNN, load_digits_data, train_digits_model
    from graphopt.train import evaluate, train

    data = load_digits_data(seed=0, test_size=0.3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DigitsCNN()
    base_acc = train_digits_model(model, epochs=args.digits_epochs, data=data)
    x = data.x_test[:1]
    base_graph = graphopt.trace(model, (x,))
    test = [(data.x_test, data.y_test)]
    batches = [(data.x_train[i : i + 64], data.y_train[i : i + 64]) for i in range(0, len(data.y_train), 64)]
    rows = []
    for ratio in ratios:
        for tool in ("graphopt", "torch-pruning"):
            row = {"ratio": ratio, "tool": tool, "base": base_acc}
            rows.append(row)
            try:
                if tool == "graphopt":
                    pruned = prune_graphopt("digits_cnn", model, x, ratio, args.round_to)["graph"]
                    row["pruned"] = evaluate(pruned, test)
                    tuned = train(
                        pruned, batches, nn.CrossEntropyLoss(), epochs=args.finetune_epochs, optimizer="adam",
                        lr=args.finetune_lr, seed=0, log=None,
                    )  # fmt: skip
                    row["tuned"] = evaluate(tuned.graph, test)
                    row["macs_kept"] = graph_cost(pruned).macs / graph_cost(base_graph).macs
                else:
                    pruned = prune_torch_pruning("digits_cnn", model, x, ratio, args.round_to)["model"]
                    row["pruned"] = _module_accuracy(pruned, data)
                    finetune_module(pruned, batches, args.finetune_epochs, args.finetune_lr, seed=0)
                    row["tuned"] = _module_accuracy(pruned, data)
                    row["macs_kept"] = graph_cost(graphopt.trace(pruned, (x,))).macs / graph_cost(base_graph).macs
            except Exception as e:
                row["error"] = _short(e)
    return rows


def finetune_module(model: nn.Module, batches: list, epochs: int, lr: float, seed: int) -> None:
    """A plain torch loop matching `graphopt.train.train(optimizer="adam")`: batch-norm statistics frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()  # inference-form batch norm, as in graphopt's IR
        for _ in range(epochs):
            for xb, yb in batches:
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()


def _module_accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return (model.eval()(data.x_test).argmax(1) == data.y_test).float().mean().item()


# ---- tables ------------------------------------------------------------------------------------


def _f(v, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def _kept(r: dict, before: str, after: str) -> float | None:
    return r[after] / r[before] if r.get(after) is not None and r.get(before) else None


def _latency(r: dict, backend: str) -> tuple[str, str, str]:
    """(ms before -> after, speedup, speedup / MACs reduction) for one backend."""
    b, a = r.get(f"{backend}_before"), r.get(f"{backend}_after")
    if b is None or a is None:
        return r.get(f"{backend}_error", "-"), "-", "-"
    speedup = b / a
    kept = _kept(r, "macs_before", "macs_after")
    goal = speedup * kept if kept else None  # speedup / (macs_before / macs_after)
    return f"{_ms(b)} → {_ms(a)}", f"{speedup:.2f}×", _f(goal, ".2f")


def _seconds(r: dict) -> str:
    if r.get("seconds") is None:
        return "-"
    trace = f" (trace {r['trace_seconds']:.2f})" if r.get("trace_seconds") is not None else ""
    return f"{r['seconds']:.2f}{trace}"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def model_table(rows: list[dict]) -> list[str]:
    header = (
        "| model | ratio | tool | result | MACs (graphopt count) | MACs kept | params kept | MACs kept (TP count) "
        "| prune s | ORT ms before → after | ORT speedup | ÷ MACs reduction | TVM ms before → after | TVM speedup "
        "| ÷ MACs reduction | load |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        macs = f"{r['macs_before']:,} → {r['macs_after']:,}" if "macs_after" in r else "-"
        ort, tvm = _latency(r, "ort"), _latency(r, "tvm")
        kept = [_kept(r, "macs_before", "macs_after"), _kept(r, "params_before", "params_after")]
        kept.append(_kept(r, "tp_macs_before", "tp_macs_after"))
        lines.append(
            f"| {r['model']} | {r['ratio']:g} | {r['tool']} | {r['result']} | {macs} "
            f"| {' | '.join(_f(k, '.3f') for k in kept)} | {_seconds(r)} "
            f"| {' | '.join(ort)} | {' | '.join(tvm)} | {r['load']:.1f} |"
        )
    return lines


def digits_table(rows: list[dict]) -> list[str]:
    header = "| ratio | tool | MACs kept | trained acc | pruned acc | fine-tuned acc | change |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['ratio']:g} | {r['tool']} | fails: {r['error']} | {r['base']:.4f} | - | - | - |")
            continue
        lines.append(
            f"| {r['ratio']:g} | {r['tool']} | {r['macs_kept']:.3f} | {r['base']:.4f} | {r['pruned']:.4f} "
            f"| {r['tuned']:.4f} | {100 * (r['tuned'] - r['base']):+.2f} pt |"
        )
    return lines


def _tp_version() -> str:
    from importlib.metadata import version

    return version("torch-pruning")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--ratios", default="0.3,0.5", help="channel ratios (and head ratios for transformers)")
    p.add_argument("--round-to", type=int, default=8, help="both tools keep widths multiples of this")
    p.add_argument("--runs", type=int, default=30, help="timed onnxruntime rounds (median)")
    p.add_argument("--tvm-runs", type=int, default=5, help="timed TVM rounds (median)")
    p.add_argument("--no-tvm", action="store_true", help="skip the TVM builds and latencies")
    p.add_argument(
        "--tvm-models",
        default=",".join(m for m in DEFAULT_MODELS if m not in ("resnet18", "mobilenet_v2")),
        help="models timed in TVM (untuned TVM runs ResNet-18 and MobileNetV2 in seconds per call; add them here)",
    )
    p.add_argument("--no-digits", action="store_true", help="skip the digits accuracy table")
    p.add_argument("--digits-epochs", type=int, default=12)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--finetune-lr", type=float, default=2e-3)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark, print both tables; returns their rows."""
    args = parse_args(argv)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    torch.set_num_threads(2)
    print(
        f"# {os.uname().machine}, {os.cpu_count()} cores; torch {torch.__version__}, torch-pruning {_tp_version()}; "
        f"batch 1; median ms of {args.runs} onnxruntime rounds (2 intra-op threads) and {args.tvm_runs} TVM rounds "
        f"(untuned, x86); load = 1-min load average before the model; load before the run: "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    warm_up()
    rows = []
    lines = model_table([])
    print("\n".join(lines), flush=True)
    for name in (m for m in args.models.split(",") if m):
        for ratio in ratios:
            new = bench_model(name, ratio, args)
            rows += new
            for line in model_table(new)[2:]:
                print(line, flush=True)
    digits = []
    if not args.no_digits:
        print(
            f"\n# digits CNN: trained {args.digits_epochs} epochs; each tool prunes, then fine-tunes "
            f"{args.finetune_epochs} epochs, Adam lr {args.finetune_lr:g}, the same 64-sample batches in the same order"
        )
        digits = digits_accuracy(ratios, args)
        print("\n".join(digits_table(digits)), flush=True)
    return {"models": rows, "digits": digits}


if __name__ == "__main__":
    main()
    sys.exit(0)
