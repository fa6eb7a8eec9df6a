"""Quantization-aware training from a post-training-quantized (Q/DQ) graph: fake quantization with a
straight-through estimator, fixed or learned (LSQ) scales, results written back as integers.

    result = qat(ptq_graph, batches, torch.nn.CrossEntropyLoss(), epochs=2, optimizer="adam", lr=1e-4)
    result.graph   # the same Q/DQ graph, with re-trained integer weights (and scales)

A quantized graph stores each weight as an integer parameter feeding `dequantize`,
and integers cannot be trained. So `qat`:
1. builds a training graph (`float_shadow`): each integer weight becomes a float
   parameter (its dequantized value, the *shadow*) fake-quantized by a
   `quantize` node with the weight's scale, zero point, axis, block size, dtype
   and integer range, feeding the existing `dequantize`; an int32 bias becomes its
   float value. Activation Q/DQ pairs stay as they are. With `learn_scales`,
   every scale parameter of a weight or activation Q/DQ becomes trainable.
2. trains it with the shared loop, `train(..., impls={"quantize": ste_quantize})`:
   `ste_quantize` rounds with the straight-through estimator (the gradient of
   round is 1; clamping stops it outside [qmin, qmax]) and returns the integers
   as floats so the gradient reaches `dequantize`. A scale's gradient is
   LSQ's (Esser et al. 2020), scaled by 1 / sqrt(elements per scale * qmax).
3. writes back into a copy of the PTQ graph: integers = quantize(shadow) with the
   trained scale (what the forward pass used, so the written graph computes
   exactly what was trained), learned scales (kept positive), and each int32
   bias re-quantized on its grid (s_x * s_w when that is how it was built, so
   integer kernels stay valid).
The PTQ graph is never modified. Distributed data parallel works as for
`train` (call `init_distributed()` first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from graphopt.errors import TrainError
from graphopt.ir.graph import Graph
from graphopt.ir.ops import quant_range
from graphopt.ir.ops import quantize as reference_quantize
from graphopt.ir.types import dtype_from_numpy, dtype_info, numpy_dtype
from graphopt.passes.weight_qdq import expand, integer_range
from graphopt.train.loop import TrainResult, train

__all__ = ["qat", "QATResult", "ste_quantize", "float_shadow", "Shadow"]

_TINY = 2**-24


@dataclass(frozen=True)
class Shadow:
    """One integer parameter replaced by a float parameter in the training graph."""

    q: str  # the integer parameter of the PTQ graph
    shadow: str  # its float stand-in in the training graph
    dequantize: str  # the dequantize node reading it
    kind: str  # "weight" (fake-quantized) or "bias" (int32, trained in float)


@dataclass(frozen=True)
class QATResult:
    graph: Graph  # the PTQ graph with trained integers (and scales)
    train: TrainResult  # the run on the training graph (losses, steps, time)
    shadows: tuple[Shadow, ...]
    scales: tuple[str, ...]  # scale parameters that were learned


def ste_quantize(x, scale, zero_point, *, axis, dtype, qmin, qmax, block_size):
    """`quantize` with straight-through rounding and LSQ scale gradients; integers returned as floats."""
    if dtype.startswith("float8"):
        return reference_quantize(
            x, scale, zero_point, axis=axis, dtype=dtype, qmin=qmin, qmax=qmax, block_size=block_size
        )
    lo, hi = quant_range(dtype, qmin, qmax)
    if scale.requires_grad:  # LSQ: g = 1 / sqrt(elements per scale * qmax)
        g = 1.0 / float(np.sqrt(max(x.numel() / max(scale.numel(), 1), 1) * max(abs(lo), hi)))
        scale = (scale - scale * g).detach() + scale * g
    s = _broadcast(scale, x, axis, block_size)
    z = _broadcast(zero_point, x, axis, block_size).to(x.dtype)
    y = x / s
    rounded = y + (torch.round(y) - y).detach()
    return torch.clamp(rounded + z, lo, hi)


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis, block_size) -> torch.Tensor:
    if axis is None or t.dim() == 0:
        return t
    axis = axis % x.dim()
    if block_size:
        return t.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def float_shadow(graph: Graph, *, learn_scales: bool = False) -> tuple[Graph, list[Shadow], list[str]]:
    """(training graph, shadows, learned scale parameters) for a Q/DQ `graph`; `graph` is not modified."""
    work = graph.copy()
    shadows = []
    for dq in [n for n in work.nodes if n.op == "dequantize"]:
        q = dq.inputs[0]
        if not all(work.is_param(v) for v in dq.inputs):
            continue
        dtype = dtype_from_numpy(work.param(q).data.dtype)
        info = dtype_info(dtype)
        if info.kind not in ("int", "uint"):
            continue
        data = _dequantize(work, dq)
        if info.bits <= 8:
            # dequantize(q_int, s, z) => dequantize(quantize(q_float, s, z), s, z)
            shadow = work.add_param(f"{q}.shadow", data, trainable=True)
            lo, hi = integer_range(dtype, work.param(q).data, work.param(dq.inputs[2]).data)
            attrs = dict(axis=dq.attrs["axis"], block_size=dq.attrs["block_size"], dtype=dtype, qmin=lo, qmax=hi)
            fq = work.add_node("quantize", [shadow, *dq.inputs[1:]], attrs=attrs, name=f"{q}.fq")
            work.set_input(dq, 0, fq.output)
            shadows.append(Shadow(q, shadow, dq.name, "weight"))
        elif dtype == "int32":
            # dequantize(b_int32, s, z) => b_float
            shadow = work.add_param(f"{q}.shadow", data, trainable=True)
            work.replace_all_uses(dq.output, shadow)
            shadows.append(Shadow(q, shadow, dq.name, "bias"))
    scales = []
    if learn_scales:
        for node in work.nodes:
            if node.op == "quantize" and work.is_param(node.inputs[1]) and node.inputs[1] not in scales:
                if np.issubdtype(work.param(node.inputs[1]).data.dtype, np.floating):
                    work.set_trainable(node.inputs[1], True)
                    scales.append(node.inputs[1])
    return work, shadows, scales


def qat(
    graph: Graph,
    data: Iterable,
    loss_fn: Callable[..., torch.Tensor],
    *,
    learn_scales: bool = False,
    **train_kw,
) -> QATResult:
    """Fine-tune a Q/DQ graph with fake quantization; return the Q/DQ graph with the trained integers.

    train_kw: passed to `graphopt.train.train` (epochs, steps, optimizer, lr, log, device, ...);
    `impls` is set here (`quantize` -> `ste_quantize`).
    """
    if "impls" in train_kw:
        raise TrainError("qat: impls is set by qat itself (quantize -> ste_quantize)")
    work, shadows, scales = float_shadow(graph, learn_scales=learn_scales)
    if not shadows:
        raise TrainError(f"qat: graph '{graph.name}' has no quantized weight (dequantize of an integer parameter)")
    run = train(work, data, loss_fn, impls={"quantize": ste_quantize}, **train_kw)
    trained = run.graph
    out = graph.copy()
    for name in scales:
        out.set_param(name, np.maximum(np.abs(trained.param(name).data), _TINY).astype(np.float32))
    for sh in (s for s in shadows if s.kind == "weight"):
        dq = out.node(sh.dequantize)
        fq = trained.producer(trained.node(sh.dequantize).inputs[0])
        out.set_param(sh.q, _quantize(trained.param(sh.shadow).data, out, dq, fq.attrs))
    for sh in (s for s in shadows if s.kind == "bias"):
        _write_bias(graph, out, trained, sh, scales)
    return QATResult(out, run, tuple(shadows), tuple(scales))


def _dequantize(graph: Graph, dq) -> np.ndarray:
    q, s, z = (graph.param(v).data for v in dq.inputs)
    shape, axis, block = q.shape, dq.attrs["axis"], dq.attrs["block_size"]
    scale = expand(s.astype(np.float64), shape, axis, block)
    zero = expand(z.astype(np.float64), shape, axis, block)
    return ((q.astype(np.float64) - zero) * scale).astype(s.dtype)


def _quantize(w: np.ndarray, graph: Graph, dq, attrs) -> np.ndarray:
    """clip(round(w / s) + z) on `dq`'s (possibly learned) scale, as ste_quantize computes it in float32."""
    s, z = (graph.param(v).data for v in dq.inputs[1:])
    shape, axis, block = w.shape, dq.attrs["axis"], dq.attrs["block_size"]
    scale = torch.from_numpy(np.ascontiguousarray(expand(s.astype(np.float32), shape, axis, block)))
    zero = expand(z.astype(np.float32), shape, axis, block)
    y = (torch.from_numpy(np.array(w, np.float32)) / scale).numpy()
    q = np.clip(np.round(y) + zero, attrs["qmin"], attrs["qmax"])
    return q.astype(numpy_dtype(attrs["dtype"]))


def _write_bias(ptq: Graph, out: Graph, trained: Graph, sh: Shadow, scales: list[str]) -> None:
    """The trained float bias back on an int32 grid: s_x * s_w (trained) when it was built so, else its own scale."""
    dq = out.node(sh.dequantize)
    scale = out.param(dq.inputs[1]).data.astype(np.float64)
    product = _input_times_weight_scale(ptq, dq.output) if scales else None
    if product is not None and np.allclose(product, scale, rtol=1e-6, atol=0):
        scale = _input_times_weight_scale(out, dq.output)
        out.set_param(dq.inputs[1], scale.astype(np.float32))
    zero = out.param(dq.inputs[2]).data.astype(np.float64)
    ints = np.round(trained.param(sh.shadow).data.astype(np.float64) / np.maximum(scale, _TINY)) + zero
    out.set_param(sh.q, np.clip(ints, -(2**31), 2**31 - 1).astype(np.int32))


def _input_times_weight_scale(graph: Graph, bias_value: str) -> np.ndarray | None:
    """s_x * s_w of the conv/linear reading `bias_value`, when both come from dequantize nodes of parameters."""
    readers = [n for n in graph.users(bias_value) if n.op in ("conv", "linear") and n.inputs[2:3] == (bias_value,)]
    if len(readers) != 1:
        return None
    x, w = (graph.producer(v) for v in readers[0].inputs[:2])
    if x is None or w is None or x.op != "dequantize" or w.op != "dequantize":
        return None
    if not (graph.is_param(x.inputs[1]) and graph.is_param(w.inputs[1])) or w.attrs["block_size"]:
        return None
    return graph.param(x.inputs[1]).data.astype(np.float64) * graph.param(w.inputs[1]).data.astype(np.float64)
