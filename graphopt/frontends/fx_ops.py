"""ATen → canonical op rules for the torch.export frontend.

`RULES` maps an ATen `OpOverload` to a converter `rule(cx, node, a)`:
`cx` is the importer (`graphopt.frontends.fx._Importer`), `node` the fx node and
`a` its arguments bound by schema name, defaults filled (tensors are still fx
nodes). A rule returns the graph value(s) the fx node stands for (one name, or a
list for multi-output ops where `None` marks an output it cannot represent), or
`None` to keep the op as an opaque node. In-place variants (`relu_`, `add_`) use
their functional rule when the importer has checked the mutation is unobservable.

Axes are normalized to non-negative indices; spatial padding becomes ONNX-style
`pads` (all begins, then all ends). Shape ops name axes rather than sizes where
they can (squeeze/unsqueeze axes, reshape 0/-1, expand -1), so a channel count
changed upstream leaves them valid.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from torch.fx import Node

    from graphopt.frontends.fx import _Importer

aten = torch.ops.aten
Rule = Callable[["_Importer", "Node", dict], Any]


# --- helpers --------------------------------------------------------------------


def _axis(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _ntuple(v, n: int) -> list[int]:
    v = [v] if isinstance(v, int) else list(v)
    return [int(x) for x in (v * n if len(v) == 1 else v)]


def _is_float(cx, x) -> bool:
    return cx.type(x).dtype.startswith(("float", "bfloat"))


# --- convolution, linear algebra, normalization ------------------------------------


def _conv(cx, node, a):
    # conv{1,2,3}d(x, w, b, stride, padding | 'same' | 'valid', dilation, groups) => conv{pads}
    if a.get("transposed"):
        return _conv_transpose(cx, node, a)
    x, w = a["input"], a["weight"]
    kernel = cx.type(w).shape[2:]
    nd = len(kernel)
    if cx.type(x).rank != nd + 2:  # unbatched input
        return None
    stride, dilation = _ntuple(a["stride"], nd), _ntuple(a["dilation"], nd)
    padding = a["padding"]
    if padding == "valid":
        begins = ends = [0] * nd
    elif padding == "same":  # torch puts the odd pixel at the end
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        begins = [t // 2 for t in total]
        ends = [t - b for t, b in zip(total, begins)]
    else:
        begins = ends = _ntuple(padding, nd)
    inputs = [cx.v(x), cx.v(w)] + ([cx.v(a["bias"])] if a["bias"] is not None else [])
    return cx.emit("conv", inputs, stride=stride, pads=begins + ends, dilation=dilation, groups=int(a["groups"]))


def _conv_transpose(cx, node, a):
    # conv_transpose{1,2,3}d(x, w, b, stride, padding, output_padding, groups, dilation) => conv_transpose
    # (also convolution(..., transposed=True))
    if node.target is aten.convolution.default and not a["transposed"]:
        return None
    x, w = a["input"], a["weight"]
    nd = cx.type(w).rank - 2
    if cx.type(x).rank != nd + 2:  # unbatched input
        return None
    pad = _ntuple(a["padding"], nd)
    inputs = [cx.v(x), cx.v(w)] + ([cx.v(a["bias"])] if a["bias"] is not None else [])
    return cx.emit(
        "conv_transpose",
        inputs,
        stride=_ntuple(a["stride"], nd),
        pads=pad + pad,
        output_padding=_ntuple(a["output_padding"], nd),
        dilation=_ntuple(a["dilation"], nd),
        groups=int(a["groups"]),
    )


def _linear(cx, node, a):
    # linear(x, w, b) => linear
    inputs = [cx.v(a["input"]), cx.v(a["weight"])]
    return cx.emit("linear", inputs + ([cx.v(a["bias"])] if a["bias"] is not None else []))


def _matmul(cx, node, a):
    # matmul/mm/bmm(a, b) => matmul
    return cx.emit("matmul", [cx.v(node.args[0]), cx.v(node.args[1])])


def _addmm(cx, node, a):
    # addmm(b, x, permute(w, [1, 0])) => linear(x, w, b); otherwise beta*b + alpha*(x @ m)
    bias, x, m = a["self"], a["mat1"], a["mat2"]
    w = cx.transposed_source(m)
    if w is not None and a["beta"] == 1 and a["alpha"] == 1 and cx.type(bias).rank == 1:
        return cx.emit("linear", [cx.v(x), w, cx.v(bias)])
    prod = cx.emit("matmul", [cx.v(x), cx.v(m)], suffix="_mm")
    if a["alpha"] != 1:
        prod = cx.emit("mul", [prod, cx.scalar(a["alpha"], "alpha")], suffix="_alpha")
    b = cx.v(bias)
    if a["beta"] != 1:
        b = cx.emit("mul", [b, cx.scalar(a["beta"], "beta")], suffix="_beta")
    return cx.emit("add", [prod, b])


def _batch_norm(cx, node, a, outputs=1):
    # batch_norm / _native_batch_norm_legit*(x, w, b, mean, var, eps) in eval => batch_norm
    if a.get("training") or a["running_mean"] is None or a["running_var"] is None:
        return None
    x, mean = a["input"], cx.v(a["running_mean"])
    channels = cx.graph.type_of(mean).shape
    w = cx.v(a["weight"]) if a["weight"] is not None else cx.constant(1.0, channels, "weight", like=mean)
    b = cx.v(a["bias"]) if a["bias"] is not None else cx.constant(0.0, channels, "bias", like=mean)
    out = cx.emit("batch_norm", [cx.v(x), w, b, mean, cx.v(a["running_var"])], eps=float(a["eps"]))
    return out if outputs == 1 else [out] + [None] * (outputs - 1)


def _layer_norm(cx, node, a, outputs=1):
    # layer_norm / native_layer_norm(x, shape, w?, b?, eps) => layer_norm
    shape = [int(s) for s in a["normalized_shape"]]
    inputs = [cx.v(a["input"])]
    if a["weight"] is not None or a["bias"] is not None:
        inputs.append(
            cx.v(a["weight"]) if a["weight"] is not None else cx.constant(1.0, shape, "weight", like=inputs[0])
        )
    if a["bias"] is not None:
        inputs.append(cx.v(a["bias"]))
    out = cx.emit("layer_norm", inputs, normalized_shape=shape, eps=float(a["eps"]))
    return out if outputs == 1 else [out] + [None] * (outputs - 1)


# --- elementwise --------------------------------------------------------------------


def _unary(cx, node, a, op):
    # relu/sigmoid/tanh/...(x) => same-named op
    return cx.emit(op, [cx.v(node.args[0])])


def _gelu(cx, node, a):
    # gelu(x, approximate) => gelu{approximate}
    return cx.emit("gelu", [cx.v(a["self"])], approximate=a["approximate"])


def _clip(cx, node, a, lo=None, hi=None):
    # relu6 / hardtanh / clamp / clamp_min / clamp_max(x, lo, hi) => clip{min, max}
    x = a["self"]
    if lo is None and hi is None:
        lo, hi = a.get("min_val", a.get("min")), a.get("max_val", a.get("max"))
    if isinstance(lo, torch.fx.Node) or isinstance(hi, torch.fx.Node):
        return None
    num = float if _is_float(cx, x) else int
    return cx.emit("clip", [cx.v(x)], min=None if lo is None else num(lo), max=None if hi is None else num(hi))


def _binary(cx, node, a, op, reverse=False):
    # add/sub/mul/div(x, y | scalar, alpha) => op(x, alpha * y); rsub(x, y) => sub(y, alpha * x)
    if a.get("rounding_mode") is not None:
        return None
    x, y = cx.operand(node.args[0], "self"), cx.operand(node.args[1], "scalar")
    if reverse:
        x, y = y, x
    alpha = a.get("alpha", 1)
    if alpha != 1:
        y = cx.emit("mul", [y, cx.scalar(alpha, "alpha")], suffix="_alpha")
    return cx.emit(op, [x, y])


def _compare(cx, node, a, op):
    # eq/lt/gt/le/ge(x, y | scalar) => op; a scalar takes x's dtype (a float against integers: float32)
    x, y = node.args[0], node.args[1]
    if isinstance(y, torch.fx.Node):
        return cx.emit(op, [cx.v(x), cx.v(y)])
    dtype = cx.type(x).dtype
    if isinstance(y, float) and not _is_float(cx, x):
        dtype = "float32"
    elif dtype == "bool" and not isinstance(y, bool):
        dtype = "int64"
    other = cx.graph.add_param(f"{node.name}_scalar", np.asarray(y, dtype=dtype), trainable=False)
    return cx.emit(op, [cx.v(x), other])


def _where(cx, node, a):
    # where(cond, x | scalar, y | scalar) => where (a scalar in the result dtype)
    cond, x, y = node.args[:3]
    return cx.emit("where", [cx.v(cond), cx.operand(x, "self"), cx.operand(y, "other")])


# --- pooling and reductions -------------------------------------------------------------


def _max_pool(cx, node, a, nd, outputs=1):
    # max_pool{1,2,3}d[_with_indices](x, k, stride, padding, dilation, ceil) => max_pool
    if cx.type(a["self"]).rank != nd + 2:
        return None
    k = _ntuple(a["kernel_size"], nd)
    stride = _ntuple(a["stride"], nd) if a["stride"] else k
    pad = _ntuple(a["padding"], nd)
    out = cx.emit(
        "max_pool",
        [cx.v(a["self"])],
        kernel_size=k,
        stride=stride,
        pads=pad + pad,
        dilation=_ntuple(a["dilation"], nd),
        ceil_mode=bool(a["ceil_mode"]),
    )
    return out if outputs == 1 else [out, None]


def _avg_pool(cx, node, a, nd):
    # avg_pool{1,2,3}d(x, k, stride, padding, ceil, count_include_pad) => avg_pool
    if a.get("divisor_override") is not None or cx.type(a["self"]).rank != nd + 2:
        return None
    k = _ntuple(a["kernel_size"], nd)
    stride = _ntuple(a["stride"], nd) if a["stride"] else k
    pad = _ntuple(a["padding"], nd)
    return cx.emit(
        "avg_pool",
        [cx.v(a["self"])],
        kernel_size=k,
        stride=stride,
        pads=pad + pad,
        ceil_mode=bool(a["ceil_mode"]),
        count_include_pad=bool(a["count_include_pad"]),
    )


def _adaptive_pool(cx, node, a, op, nd, outputs=1):
    # adaptive_{avg,max}_pool{1,2,3}d(x, size) => adaptive_{avg,max}_pool
    if cx.type(a["self"]).rank != nd + 2:
        return None
    out = cx.emit(op, [cx.v(a["self"])], output_size=_ntuple(a["output_size"], nd))
    return out if outputs == 1 else [out, None]


def _reduce(cx, node, a, op):
    # mean/sum(x, dims?, keepdim, dtype) => cast? then mean/sum{dims}
    x = cx.v(a["self"])
    rank = cx.type(a["self"]).rank
    x = cx.maybe_cast(x, a.get("dtype"))
    dims = a.get("dim")
    dims = list(range(rank)) if dims is None or len(dims) == 0 else sorted(_axis(d, rank) for d in dims)
    return cx.emit(op, [x], dims=dims, keepdim=bool(a.get("keepdim", False)))


def _softmax(cx, node, a):
    # softmax / _softmax(x, dim) => softmax{axis}
    rank = cx.type(a["self"]).rank
    x = cx.maybe_cast(cx.v(a["self"]), a.get("dtype"))
    return cx.emit("softmax", [x], axis=_axis(a["dim"], rank))


# --- shape and data movement ------------------------------------------------------------


def _cat(cx, node, a):
    # cat(xs, dim) => concat{axis}
    rank = cx.out_type().rank
    return cx.emit("concat", [cx.v(t) for t in a["tensors"]], axis=_axis(a["dim"], rank))


def _split(cx, node, a):
    # split / split_with_sizes / chunk(x, ..., dim) => split{axis, sizes} (sizes from export)
    axis = _axis(a["dim"], cx.type(a["self"]).rank)
    sizes = [int(v.shape[axis]) for v in node.meta["val"]]
    out = cx.emit("split", [cx.v(a["self"])], axis=axis, sizes=sizes)
    return out if isinstance(out, list) else [out]


def _unbind(cx, node, a):
    # unbind(x, dim) => select{axis, i} for each i
    x, t = cx.v(a["self"]), cx.type(a["self"])
    axis = _axis(a["dim"], t.rank)
    return [cx.emit("select", [x], axis=axis, index=i, suffix=f"_{i}") for i in range(t.shape[axis])]


def _reshape_target(in_shape, size) -> list[int] | None:
    """A reshape{shape} that ties as few sizes as possible to the export's, or None.

    Leading dims equal to the input's are copied (0): a reshape whose first k dims
    match keeps them, so they stay the input's dims when it changes. -1 is kept, and a
    single dim after the copied ones becomes -1 (it can only be the remaining product).
    """
    target = [int(s) for s in size]
    k = 0
    while k < min(len(target), len(in_shape)) and target[k] == in_shape[k]:
        k += 1
    rest = target[k:]
    if 0 in rest:
        return None  # a literal empty dim; reshape reads 0 as "copy this dim"
    single = len(rest) == 1 and 0 not in in_shape  # -1 is ambiguous for an empty tensor
    return [0] * k + ([-1] if single else rest)


def _view(cx, node, a):
    # view/reshape/_unsafe_view(x, [n, ..., -1]) => reshape{shape=[0, ..., -1]}
    shape = _reshape_target(cx.type(a["self"]).shape, node.args[1])
    if shape is None:
        return None
    return cx.emit("reshape", [cx.v(a["self"])], shape=shape)


def _squeeze(cx, node, a):
    # squeeze(x), squeeze(x, dim | dims) => squeeze{axes: those of size 1}, or x if none
    t, dims = cx.type(a["self"]), a.get("dim")
    dims = range(t.rank) if dims is None else [dims] if isinstance(dims, int) else dims
    axes = sorted({_axis(int(d), t.rank) for d in dims} if t.rank else set())
    axes = [d for d in axes if t.shape[d] == 1]  # torch skips a dim that is not 1
    return cx.emit("squeeze", [cx.v(a["self"])], axes=axes) if axes else cx.v(a["self"])


def _unsqueeze(cx, node, a):
    # unsqueeze(x, dim) => unsqueeze{axes=[dim]}
    return cx.emit("unsqueeze", [cx.v(a["self"])], axes=[_axis(int(a["dim"]), cx.type(a["self"]).rank + 1)])


def _flatten(cx, node, a):
    # flatten(x, start, end) => flatten{start_dim, end_dim}; a 0-d x => reshape{[1]}
    rank = cx.type(a["self"]).rank
    if rank == 0:
        return cx.emit("reshape", [cx.v(a["self"])], shape=[1])
    return cx.emit(
        "flatten", [cx.v(a["self"])], start_dim=_axis(a["start_dim"], rank), end_dim=_axis(a["end_dim"], rank)
    )


def _permute(cx, node, a):
    # permute(x, dims) => permute{perm}
    rank = cx.type(a["self"]).rank
    return cx.emit("permute", [cx.v(a["self"])], perm=[_axis(d, rank) for d in a["dims"]])


def _transpose(cx, node, a):
    # transpose/swapaxes(x, d0, d1), t(x), numpy_T(x) => permute{perm}
    x = node.args[0]
    rank = cx.type(x).rank
    if node.target in (aten.t.default, aten.numpy_T.default):
        perm = list(reversed(range(rank)))
    else:
        d0, d1 = (_axis(int(d), rank) for d in node.args[1:3])
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    if perm == list(range(rank)):
        return cx.v(x)
    return cx.emit("permute", [cx.v(x)], perm=perm)


def _expand(cx, node, a):
    # expand(x, size) => expand{shape} with -1 wherever x's dim is kept
    src = cx.type(a["self"]).shape
    lead = len(a["size"]) - len(src)
    shape = [-1 if i >= lead and int(s) == src[i - lead] else int(s) for i, s in enumerate(a["size"])]
    return cx.emit("expand", [cx.v(a["self"])], shape=shape)


def _slice(cx, node, a):
    # slice(x, dim, start, end, step) => slice{axis, start, end, step} (clamped to the dim)
    t = cx.type(a["self"])
    axis = _axis(a["dim"], t.rank)
    start, end, step = slice(a["start"], a["end"], a["step"]).indices(t.shape[axis])
    if (start, end, step) == (0, t.shape[axis], 1):
        return cx.v(a["self"])
    return cx.emit("slice", [cx.v(a["self"])], axis=axis, start=start, end=end, step=step)


def _select(cx, node, a):
    # select(x, dim, index) => select{axis, index}
    t = cx.type(a["self"])
    axis = _axis(a["dim"], t.rank)
    return cx.emit("select", [cx.v(a["self"])], axis=axis, index=_axis(int(a["index"]), t.shape[axis]))


def _resize(cx, node, a, mode):
    # upsample_*(x, output_size?, [align_corners,] scale_factors? | scales_*) => resize{size, scales}
    out = cx.out_type()
    nd = out.rank - 2
    if cx.type(node.args[0]).rank != nd + 2:
        return None
    if "scale_factors" in a:
        scales = a["scale_factors"]
    else:  # the .default overloads: one optional scale per spatial axis
        scales = [a.get(k) for k in ("scales_d", "scales_h", "scales_w", "scales") if k in a][-nd:]
        scales = None if all(s is None for s in scales) else scales
    return cx.emit(
        "resize",
        [cx.v(node.args[0])],
        size=list(out.shape[2:]),
        mode=mode,
        align_corners=bool(a.get("align_corners") or False),
        scales=None if scales is None else [None if s is None else float(s) for s in scales],
    )


def _pixel_shuffle(cx, node, a, op, attr):
    # pixel_shuffle / pixel_unshuffle(x, r) of a 4-d x => op{r}
    if cx.type(node.args[0]).rank != 4:
        return None
    return cx.emit(op, [cx.v(node.args[0])], **{attr: int(node.args[1])})


def _einsum(cx, node, a):
    # einsum(equation, tensors) => einsum{equation}
    return cx.emit("einsum", [cx.v(t) for t in a["tensors"]], equation=str(a["equation"]))


def _embedding(cx, node, a):
    # embedding(w, ids) => embedding(ids, w) (padding_idx only affects gradients)
    return cx.emit("embedding", [cx.v(a["indices"]), cx.v(a["weight"])])


def _dropout(cx, node, a, outputs=1):
    # dropout / native_dropout / feature_dropout(x, p, train=False) => dropout{p}
    if a.get("train"):
        return None
    out = cx.emit("dropout", [cx.v(node.args[0])], p=float(a["p"]))
    return out if outputs == 1 else [out, None]


def _identity(cx, node, a):
    # clone/contiguous/alias/detach/lift_fresh_copy(x) => x
    return cx.v(node.args[0])


def _to_dtype(cx, node, a):
    # _to_copy / to / type_as(x, ...) => cast{dtype} when the dtype changes, else x
    return cx.maybe_cast(cx.v(node.args[0]), node.meta["val"].dtype, suffix="")


# --- the table ------------------------------------------------------------------------------

RULES: dict[Any, Rule] = {
    aten.conv1d.default: _conv,
    aten.conv2d.default: _conv,
    aten.conv3d.default: _conv,
    aten.conv1d.padding: _conv,
    aten.conv2d.padding: _conv,
    aten.conv3d.padding: _conv,
    aten.convolution.default: _conv,
    aten.conv_transpose1d.default: _conv_transpose,
    aten.conv_transpose2d.input: _conv_transpose,
    aten.conv_transpose3d.input: _conv_transpose,
    aten.linear.default: _linear,
    aten.matmul.default: _matmul,
    aten.mm.default: _matmul,
    aten.bmm.default: _matmul,
    aten.addmm.default: _addmm,
    aten.batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: partial(_batch_norm, outputs=3),
    aten._native_batch_norm_legit.default: partial(_batch_norm, outputs=3),
    aten.native_batch_norm.default: partial(_batch_norm, outputs=3),
    aten.layer_norm.default: _layer_norm,
    aten.native_layer_norm.default: partial(_layer_norm, outputs=3),
    aten.gelu.default: _gelu,
    aten.relu6.default: partial(_clip, lo=0.0, hi=6.0),
    aten.hardtanh.default: _clip,
    aten.clamp.default: _clip,
    aten.clamp_min.default: _clip,
    aten.clamp_max.default: _clip,
    aten.add.Tensor: partial(_binary, op="add"),
    aten.add.Scalar: partial(_binary, op="add"),
    aten.sub.Tensor: partial(_binary, op="sub"),
    aten.sub.Scalar: partial(_binary, op="sub"),
    aten.rsub.Tensor: partial(_binary, op="sub", reverse=True),
    aten.rsub.Scalar: partial(_binary, op="sub", reverse=True),
    aten.mul.Tensor: partial(_binary, op="mul"),
    aten.mul.Scalar: partial(_binary, op="mul"),
    aten.div.Tensor: partial(_binary, op="div"),
    aten.div.Scalar: partial(_binary, op="div"),
    aten.div.Tensor_mode: partial(_binary, op="div"),
    aten.pow.Tensor_Scalar: partial(_binary, op="pow"),
    aten.pow.Tensor_Tensor: partial(_binary, op="pow"),
    aten.maximum.default: partial(_binary, op="maximum"),
    aten.minimum.default: partial(_binary, op="minimum"),
    aten.eq.Tensor: partial(_compare, op="equal"),
    aten.eq.Scalar: partial(_compare, op="equal"),
    aten.lt.Tensor: partial(_compare, op="less"),
    aten.lt.Scalar: partial(_compare, op="less"),
    aten.gt.Tensor: partial(_compare, op="greater"),
    aten.gt.Scalar: partial(_compare, op="greater"),
    aten.le.Tensor: partial(_compare, op="less_equal"),
    aten.le.Scalar: partial(_compare, op="less_equal"),
    aten.ge.Tensor: partial(_compare, op="greater_equal"),
    aten.ge.Scalar: partial(_compare, op="greater_equal"),
    aten.where.self: _where,
    aten.where.ScalarOther: _where,
    aten.where.ScalarSelf: _where,
    aten.where.Scalar: _where,
    aten.einsum.default: _einsum,
    aten.max_pool1d.default: partial(_max_pool, nd=1),
    aten.max_pool2d.default: partial(_max_pool, nd=2),
    aten.max_pool3d.default: partial(_max_pool, nd=3),
    aten.max_pool1d_with_indices.default: partial(_max_pool, nd=1, outputs=2),
    aten.max_pool2d_with_indices.default: partial(_max_pool, nd=2, outputs=2),
    aten.max_pool3d_with_indices.default: partial(_max_pool, nd=3, outputs=2),
    aten.avg_pool1d.default: partial(_avg_pool, nd=1),
    aten.avg_pool2d.default: partial(_avg_pool, nd=2),
    aten.avg_pool3d.default: partial(_avg_pool, nd=3),
    aten.adaptive_avg_pool1d.default: partial(_adaptive_pool, op="adaptive_avg_pool", nd=1),
    aten.adaptive_avg_pool2d.default: partial(_adaptive_pool, op="adaptive_avg_pool", nd=2),
    aten._adaptive_avg_pool2d.default: partial(_adaptive_pool, op="adaptive_avg_pool", nd=2),
    aten.adaptive_avg_pool3d.default: partial(_adaptive_pool, op="adaptive_avg_pool", nd=3),
    aten.adaptive_max_pool1d.default: partial(_adaptive_pool, op="adaptive_max_pool", nd=1, outputs=2),
    aten.adaptive_max_pool2d.default: partial(_adaptive_pool, op="adaptive_max_pool", nd=2, outputs=2),
    aten.mean.dim: partial(_reduce, op="mean"),
    aten.mean.default: partial(_reduce, op="mean"),
    aten.sum.dim_IntList: partial(_reduce, op="sum"),
    aten.sum.default: partial(_reduce, op="sum"),
    aten.softmax.int: _softmax,
    aten._softmax.default: _softmax,
    aten.cat.default: _cat,
    aten.concat.default: _cat,
    aten.split.Tensor: _split,
    aten.split_with_sizes.default: _split,
    aten.chunk.default: _split,
    aten.unbind.int: _unbind,
    aten.view.default: _view,
    aten.reshape.default: _view,
    aten._unsafe_view.default: _view,
    aten.flatten.using_ints: _flatten,
    aten.unsqueeze.default: _unsqueeze,
    aten.squeeze.default: _squeeze,
    aten.squeeze.dim: _squeeze,
    aten.squeeze.dims: _squeeze,
    aten.permute.default: _permute,
    aten.transpose.int: _transpose,
    aten.swapaxes.default: _transpose,
    aten.t.default: _transpose,
    aten.numpy_T.default: _transpose,
    aten.expand.default: _expand,
    aten.slice.Tensor: _slice,
    aten.select.int: _select,
    aten.pixel_shuffle.default: partial(_pixel_shuffle, op="pixel_shuffle", attr="upscale_factor"),
    aten.pixel_unshuffle.default: partial(_pixel_shuffle, op="pixel_unshuffle", attr="downscale_factor"),
    aten.embedding.default: _embedding,
    aten.dropout.default: _dropout,
    aten.feature_dropout.default: _dropout,
    aten.alpha_dropout.default: _dropout,
    aten.feature_alpha_dropout.default: _dropout,
    aten.native_dropout.default: partial(_dropout, outputs=2),
    aten.clone.default: _identity,
    aten.contiguous.default: _identity,
    aten.alias.default: _identity,
    aten.detach.default: _identity,
    aten.lift_fresh_copy.default: _identity,
    aten._to_copy.default: _to_dtype,
    aten.to.dtype: _to_dtype,
    aten.to.dtype_layout: _to_dtype,
    aten.to.device: _to_dtype,
    aten.type_as.default: _to_dtype,
}

for _op in [
    "relu",
    "sigmoid",
    "tanh",
    "silu",
    "hardswish",
    "hardsigmoid",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "erf",
    "abs",
    "reciprocal",
]:
    RULES[getattr(aten, _op).default] = partial(_unary, op=_op)  # op(x) => op

for _nd, _kinds in [
    (
        1,
        [
            ("nearest", "upsample_nearest1d"),
            ("nearest-exact", "_upsample_nearest_exact1d"),
            ("linear", "upsample_linear1d"),
        ],
    ),
    (2, [("nearest", "upsample_nearest2d"), ("nearest-exact", "_upsample_nearest_exact2d")]),
    (2, [("linear", "upsample_bilinear2d"), ("cubic", "upsample_bicubic2d")]),
    (3, [("nearest", "upsample_nearest3d"), ("nearest-exact", "_upsample_nearest_exact3d")]),
    (3, [("linear", "upsample_trilinear3d")]),
]:
    for _mode, _name in _kinds:
        for _overload in ("vec", "default"):
            RULES[getattr(getattr(aten, _name), _overload)] = partial(_resize, mode=_mode)  # => resize{size, mode}

# Assertions export leaves in the graph; they compute nothing.
IGNORED = {
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
}
