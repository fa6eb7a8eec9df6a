"""ONNX op_type -> canonical op rules for `graphopt.frontends.onnx`.

`RULES` maps an ONNX op_type (default domain) to a converter `rule(cx) -> bool`
over a `NodeContext` (`graphopt.frontends.onnx_context`). A rule returns False
(or raises `Unmappable`) when this form of the op has no exact canonical
equivalent; whatever it added is rolled back and the node is kept opaque, so an
unusual attribute never makes import fail. A node that breaks its op's own
definition (a conv weight that does not fit its input) raises `InvalidNode`,
which fails the import naming the node: no runtime could run it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphopt.frontends.onnx_context import INT64_MAX, InvalidNode, NodeContext, Unmappable, dtype_name

Rule = Callable[[NodeContext], bool]


# --- helpers -----------------------------------------------------------------------------


def _static_spatial(cx: NodeContext, nd: int) -> list[int] | None:
    t = cx.type(0)
    if t is None or t.rank != nd + 2 or not all(isinstance(d, int) for d in t.shape[2:]):
        return None
    return list(t.shape[2:])


def _window_pads(cx: NodeContext, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX `pads` after resolving `auto_pad`."""
    nd = len(kernel)
    auto = cx.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "NOTSET":
        return list(cx.attr("pads", [0] * 2 * nd))
    if auto == "VALID":
        return [0] * 2 * nd
    spatial = _static_spatial(cx, nd)
    if spatial is None or auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unmappable(f"auto_pad={auto} needs static spatial dims")
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if auto == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def _axes(cx: NodeContext, index: int, attr: str = "axes") -> list[int] | None:
    """Axes from input `index` (newer opsets) or attribute `attr`; None when absent."""
    if cx.has(index):
        axes = cx.const_ints(index)
        if axes is None:
            raise Unmappable("axes are not constant")
        return axes
    axes = cx.attr(attr)
    return None if axes is None else [int(a) for a in axes]


def _scalar_input(cx: NodeContext, i: int) -> float | int | None:
    data = cx.const(i)
    if data is None or data.size != 1:
        raise Unmappable(f"input {i} is not a constant scalar")
    return data.reshape(()).item()


# --- rules -----------------------------------------------------------------------------------


def _check_conv_weight(cx: NodeContext) -> None:
    """Conv's weight must fit its input, group and kernel_shape, or no runtime can run it."""
    x, w, group = cx.type(0), cx.type(1), int(cx.attr("group", 1))
    if w is None or w.rank < 3 or not all(isinstance(d, int) for d in w.shape[:2]):
        return
    where = f"weight '{cx.ins[1]}' {list(w.shape)} with group={group}"
    if x is not None and x.rank != w.rank:
        raise cx.invalid(f"input '{cx.ins[0]}' has rank {x.rank}, {where} needs rank {w.rank}")
    if x is not None and isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * group:
        raise cx.invalid(f"input '{cx.ins[0]}' has {x.shape[1]} channels, {where} expects {w.shape[1] * group}")
    if group < 1 or w.shape[0] % group:
        raise cx.invalid(f"{where}: {w.shape[0]} output channels do not split into {group} groups")
    kernel = cx.attr("kernel_shape")
    if kernel is not None and w.is_static and list(kernel) != list(w.shape[2:]):
        raise cx.invalid(f"kernel_shape={list(kernel)} does not match {where}")


def conv(cx: NodeContext) -> bool:
    _check_conv_weight(cx)
    w = cx.type(1)
    if w is None or not w.is_static or w.rank not in (3, 4, 5):
        return False
    nd = w.rank - 2
    kernel = list(w.shape[2:])
    strides = list(cx.attr("strides", [1] * nd))
    dil = list(cx.attr("dilations", [1] * nd))
    pads = _window_pads(cx, kernel, strides, dil)
    ins = cx.ins[:3] if cx.has(2) else cx.ins[:2]
    cx.emit("conv", ins, dict(stride=strides, pads=pads, dilation=dil, groups=int(cx.attr("group", 1))), final=True)
    return True


def conv_transpose(cx: NodeContext) -> bool:
    # ConvTranspose(x, W[in, out/group, *k], b) => conv_transpose; output_shape / auto_pad forms stay opaque
    w, x = cx.type(1), cx.type(0)
    if w is None or not w.is_static or w.rank not in (3, 4, 5) or x is None or x.rank != w.rank:
        return False
    auto = cx.attr("auto_pad", "NOTSET")
    if cx.attr("output_shape") is not None or (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET":
        raise Unmappable("output_shape and auto_pad are not mapped")
    nd, group = w.rank - 2, int(cx.attr("group", 1))
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[0]:
        raise cx.invalid(
            f"input '{cx.ins[0]}' has {x.shape[1]} channels, weight '{cx.ins[1]}' {list(w.shape)} reads {w.shape[0]}"
        )
    attrs = dict(
        stride=list(cx.attr("strides", [1] * nd)),
        pads=list(cx.attr("pads", [0] * 2 * nd)),
        output_padding=list(cx.attr("output_padding", [0] * nd)),
        dilation=list(cx.attr("dilations", [1] * nd)),
        groups=group,
    )
    cx.emit("conv_transpose", cx.ins[:3] if cx.has(2) else cx.ins[:2], attrs, final=True)
    return True


def gemm(cx: NodeContext) -> bool:
    ta, tb = int(cx.attr("transA", 0)), int(cx.attr("transB", 0))
    alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
    a, b, c = cx.ins[0], cx.ins[1], (cx.ins[2] if cx.has(2) else None)
    bt = cx.type(1)
    n = None if bt is None or bt.rank != 2 else bt.shape[0 if tb else 1]
    cdata = cx.const(2)
    bias_ok = c is None or (
        beta == 1.0
        and cdata is not None
        and isinstance(n, int)
        and cdata.size in (1, n)
        and cdata.shape in ((), (1,), (n,), (1, n))
    )
    if not ta and alpha == 1.0 and bias_ok and (tb or cx.const(1) is not None):
        weight = b if tb else cx.transposed(1)
        ins = [a, weight]
        if c is not None:
            ins.append(
                c
                if cdata.shape == (n,)
                else cx.add_param(
                    f"{c}_{n}", np.broadcast_to(cdata.reshape(-1), (n,)).copy(), trainable=cx.graph.params[c].trainable
                )
            )
        cx.emit("linear", ins, final=True)
        return True
    a2 = cx.emit("permute", [a], {"perm": [1, 0]}) if ta else a
    b2 = cx.emit("permute", [b], {"perm": [1, 0]}) if tb else b
    y = cx.emit("matmul", [a2, b2], final=c is None and alpha == 1.0)
    if alpha != 1.0:
        y = cx.emit("mul", [y, cx.scalar(alpha, y)], final=c is None)
    if c is not None:
        if beta != 1.0:
            c = cx.emit("mul", [c, cx.scalar(beta, c)])
        cx.emit("add", [y, c], final=True)
    return True


def matmul(cx: NodeContext) -> bool:
    b = cx.const(1)
    t = cx.graph.producer(cx.ins[1]) if cx.has(1) else None
    x_ok = cx.rank(0) is not None and cx.rank(0) >= 1
    if b is not None and b.ndim == 2 and x_ok:
        cx.emit("linear", [cx.ins[0], cx.transposed(1)], final=True)  # x @ B == linear(x, B.T)
    elif (
        t is not None
        and t.op == "permute"
        and list(t.attrs["perm"]) == [1, 0]
        and x_ok
        and cx.graph.is_param(t.inputs[0])
    ):
        cx.emit("linear", [cx.ins[0], t.inputs[0]], final=True)  # x @ W.T == linear(x, W)
    else:
        cx.emit("matmul", cx.ins[:2], final=True)
    return True


def batch_norm(cx: NodeContext) -> bool:
    if int(cx.attr("training_mode", 0)) or not cx.only_first_output_used():
        return False
    cx.freeze(3, 4)
    cx.emit("batch_norm", cx.ins[:5], {"eps": float(cx.attr("epsilon", 1e-5))}, final=True)
    return True


def layer_norm(cx: NodeContext) -> bool:
    t = cx.type(0)
    if t is None or not cx.only_first_output_used():
        return False
    axis = int(cx.attr("axis", -1)) % t.rank
    shape = list(t.shape[axis:])
    if not all(isinstance(d, int) for d in shape):
        return False
    for i in (1, 2):
        if cx.has(i) and (cx.type(i) is None or list(cx.type(i).shape) != shape):
            return False  # canonical layer_norm takes weight/bias of exactly the normalized shape
    ins = [v for v in cx.ins[:3]]
    if not cx.has(2):
        ins = ins[:2]
    cx.emit("layer_norm", ins, {"normalized_shape": shape, "eps": float(cx.attr("epsilon", 1e-5))}, final=True)
    return True


def unary(op: str) -> Rule:
    def rule(cx: NodeContext) -> bool:
        cx.emit(op, cx.ins[:1], final=True)
        return True

    rule.__name__ = op
    return rule


def all_inputs(op: str) -> Rule:
    """All inputs, in order, no attributes."""

    def rule(cx: NodeContext) -> bool:
        cx.emit(op, cx.ins, final=True)
        return True

    rule.__name__ = op
    return rule


def binary(op: str) -> Rule:
    def rule(cx: NodeContext) -> bool:
        if len(cx.ins) != 2:
            return False
        if op == "div" and not all(cx.type(i) and cx.type(i).dtype.startswith(("float", "bfloat")) for i in (0, 1)):
            return False  # ONNX integer Div truncates; canonical div is true division
        cx.emit(op, cx.ins, final=True)
        return True

    rule.__name__ = op
    return rule


def gelu(cx: NodeContext) -> bool:
    approx = cx.attr("approximate", "none")
    cx.emit("gelu", cx.ins[:1], {"approximate": approx.decode() if isinstance(approx, bytes) else approx}, final=True)
    return True


def hard_sigmoid(cx: NodeContext) -> bool:
    alpha, beta = float(cx.attr("alpha", 0.2)), float(cx.attr("beta", 0.5))
    x = cx.ins[0]
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        cx.emit("hardsigmoid", [x], final=True)
        return True
    y = cx.emit("add", [cx.emit("mul", [x, cx.scalar(alpha, x)]), cx.scalar(beta, x)])
    cx.emit("clip", [y], {"min": 0.0, "max": 1.0}, final=True)  # max(0, min(1, alpha*x + beta))
    return True


def clip(cx: NodeContext) -> bool:
    t = cx.type(0)
    if cx.opset < 11:
        lo, hi = cx.attr("min"), cx.attr("max")
    else:
        lo = _scalar_input(cx, 1) if cx.has(1) else None
        hi = _scalar_input(cx, 2) if cx.has(2) else None
    is_int = t is not None and not t.dtype.startswith(("float", "bfloat"))
    conv_ = int if is_int else float
    cx.emit(
        "clip",
        cx.ins[:1],
        {"min": None if lo is None else conv_(lo), "max": None if hi is None else conv_(hi)},
        final=True,
    )
    return True


def concat(cx: NodeContext) -> bool:
    cx.emit("concat", [v for v in cx.ins if v], {"axis": int(cx.attr("axis"))}, final=True)
    return True


def split(cx: NodeContext) -> bool:
    t = cx.type(0)
    axis = int(cx.attr("axis", 0))
    sizes = cx.const_ints(1) if cx.has(1) else cx.attr("split")
    if cx.has(1) and sizes is None:
        return False
    if sizes is None:
        dim = None if t is None else t.shape[axis]
        if not isinstance(dim, int):
            return False
        n = int(cx.attr("num_outputs", len(cx.outs)))
        chunk = -(-dim // n)
        if cx.attr("num_outputs") is None and dim % n:
            return False
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    cx.emit("split", cx.ins[:1], {"axis": axis, "sizes": [int(s) for s in sizes]}, final=True)
    return True


def reshape(cx: NodeContext) -> bool:
    shape = cx.const_ints(1) if cx.has(1) else cx.attr("shape")
    if shape is None or (int(cx.attr("allowzero", 0)) and 0 in shape):
        return False
    cx.emit("reshape", cx.ins[:1], {"shape": [int(s) for s in shape]}, final=True)
    return True


def flatten(cx: NodeContext) -> bool:
    r = cx.rank(0)
    if r is None:
        return False
    a = int(cx.attr("axis", 1))
    a = a + r if a < 0 else a
    x = cx.ins[0]
    if a == 0:  # ONNX: [1, prod(all)]
        cx.emit("reshape", [x], {"shape": [1, -1]}, final=True)
    elif a == r:  # ONNX: [prod(all), 1]
        cx.emit("reshape", [x], {"shape": [-1, 1]}, final=True)
    elif a == 1:
        cx.emit("flatten", [x], {"start_dim": 1, "end_dim": -1}, final=True)
    else:  # [d0..d(a-1), P] then merge the leading dims
        y = cx.emit("flatten", [x], {"start_dim": a, "end_dim": -1})
        cx.emit("flatten", [y], {"start_dim": 0, "end_dim": a - 1}, final=True)
    return True


def transpose(cx: NodeContext) -> bool:
    perm = cx.attr("perm")
    if perm is None:
        if cx.rank(0) is None:
            return False
        perm = list(reversed(range(cx.rank(0))))
    cx.emit("permute", cx.ins[:1], {"perm": [int(p) for p in perm]}, final=True)
    return True


def _distinct_axes(op: str, axes: Sequence[int], rank: int) -> list[int]:
    """(Un)squeeze axes as sorted indices; out of range or repeated (ONNX: invalid) stays opaque."""
    if any(not -rank <= a < rank for a in axes):
        raise Unmappable(f"{op} axes {list(axes)} out of range for rank {rank}")
    if len({a % rank for a in axes}) != len(axes):
        raise Unmappable(f"{op} axes {list(axes)} name an axis twice")
    return sorted(a % rank for a in axes)


def unsqueeze(cx: NodeContext) -> bool:
    t, axes = cx.type(0), _axes(cx, 1)
    if t is None or axes is None:
        return False
    cx.emit("unsqueeze", cx.ins[:1], {"axes": _distinct_axes("unsqueeze", axes, t.rank + len(axes))}, final=True)
    return True


def squeeze(cx: NodeContext) -> bool:
    t, axes = cx.type(0), _axes(cx, 1)
    if t is None:
        return False
    if axes is None:  # every size-1 dim, which needs them all known
        if not t.is_static:
            return False
        axes = [i for i, d in enumerate(t.shape) if d == 1]
    cx.emit("squeeze", cx.ins[:1], {"axes": _distinct_axes("squeeze", axes, t.rank)}, final=True)
    return True


def _pool_attrs(cx: NodeContext) -> dict[str, Any] | None:
    r = cx.rank(0)
    kernel = cx.attr("kernel_shape")
    if r is None or kernel is None or len(kernel) != r - 2 or r not in (3, 4, 5):
        return None
    nd = len(kernel)
    strides = list(cx.attr("strides", [1] * nd))
    dil = list(cx.attr("dilations", [1] * nd))
    return dict(
        kernel_size=list(kernel),
        stride=strides,
        dilation=dil,
        pads=_window_pads(cx, kernel, strides, dil),
        ceil_mode=bool(cx.attr("ceil_mode", 0)),
    )


def max_pool(cx: NodeContext) -> bool:
    attrs = _pool_attrs(cx)
    if attrs is None or not cx.only_first_output_used():
        return False
    cx.emit("max_pool", cx.ins[:1], attrs, final=True)
    return True


def avg_pool(cx: NodeContext) -> bool:
    attrs = _pool_attrs(cx)
    if attrs is None or any(d != 1 for d in attrs.pop("dilation")):
        return False
    attrs["count_include_pad"] = bool(cx.attr("count_include_pad", 0))
    cx.emit("avg_pool", cx.ins[:1], attrs, final=True)
    return True


def global_pool(op: str) -> Rule:
    def rule(cx: NodeContext) -> bool:
        r = cx.rank(0)
        if r is None or r < 3:
            return False
        cx.emit(op, cx.ins[:1], {"output_size": [1] * (r - 2)}, final=True)
        return True

    rule.__name__ = op
    return rule


def reduce(op: str, axes_input_since: int) -> Rule:
    def rule(cx: NodeContext) -> bool:
        axes = _axes(cx, 1) if cx.opset >= axes_input_since else cx.attr("axes")
        if not axes:
            if int(cx.attr("noop_with_empty_axes", 0)):
                cx.emit("identity", cx.ins[:1], final=True)
                return True
            if cx.rank(0) is None:
                return False
            axes = list(range(cx.rank(0)))
        cx.emit(op, cx.ins[:1], {"dims": [int(a) for a in axes], "keepdim": bool(cx.attr("keepdims", 1))}, final=True)
        return True

    rule.__name__ = op
    return rule


def softmax(cx: NodeContext) -> bool:
    r = cx.rank(0)
    axis = int(cx.attr("axis", -1 if cx.opset >= 13 else 1))
    if cx.opset < 13 and (r is None or axis % r != r - 1):
        return False  # before opset 13 Softmax normalized over the flattened trailing dims
    cx.emit("softmax", cx.ins[:1], {"axis": axis}, final=True)
    return True


def gather(cx: NodeContext) -> bool:
    axis = int(cx.attr("axis", 0))
    table, idx = cx.const(0), cx.const(1)
    it = cx.type(1)
    if table is not None and table.ndim == 2 and axis in (0, -2) and it and it.dtype in ("int64", "int32"):
        cx.emit("embedding", [cx.ins[1], cx.ins[0]], final=True)  # rows of a table
        return True
    if idx is None or idx.size != 1 or idx.ndim > 1:
        return False
    i = int(idx.reshape(()).item())
    if idx.ndim == 0:
        cx.emit("select", cx.ins[:1], {"axis": axis, "index": i}, final=True)
    else:
        cx.emit("slice", cx.ins[:1], {"axis": axis, "start": i, "end": i + 1 if i != -1 else INT64_MAX}, final=True)
    return True


# (mode, coordinate_transformation_mode, nearest_mode) => (canonical mode, align_corners)
_RESIZE_FORMS = {
    ("nearest", "asymmetric", "floor"): ("nearest", False),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest-exact", False),
    ("linear", "half_pixel", None): ("linear", False),
    ("linear", "align_corners", None): ("linear", True),
    ("cubic", "half_pixel", None): ("cubic", False),
    ("cubic", "align_corners", None): ("cubic", True),
}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def resize(cx: NodeContext) -> bool:
    # Resize(x, roi, scales | sizes) in torch's interpolate forms => resize{size, mode, align_corners, scales}
    t = cx.type(0)
    if t is None or t.rank not in (3, 4, 5) or not all(isinstance(d, int) for d in t.shape[1:]):
        return False
    mode = _text(cx.attr("mode", "nearest"))
    coords = _text(cx.attr("coordinate_transformation_mode", "half_pixel"))
    nearest = _text(cx.attr("nearest_mode", "round_prefer_floor")) if mode == "nearest" else None
    form = _RESIZE_FORMS.get((mode, coords, nearest))
    if form is None:
        raise Unmappable(f"Resize {mode} / {coords} / {nearest} has no torch equivalent")
    if mode == "cubic" and (float(cx.attr("cubic_coeff_a", -0.75)) != -0.75 or int(cx.attr("exclude_outside", 0))):
        raise Unmappable("cubic_coeff_a other than -0.75 or exclude_outside")
    if int(cx.attr("antialias", 0)) or cx.attr("axes") is not None:
        raise Unmappable("antialias and axes are not mapped")
    spatial = list(t.shape[2:])
    scales = cx.const(2) if cx.has(2) else None
    sizes = cx.const_ints(3) if cx.has(3) else None
    if scales is not None and scales.size:
        scales = [float(v) for v in scales.reshape(-1)]
        if len(scales) != t.rank or scales[:2] != [1.0, 1.0]:
            raise Unmappable(f"scales {scales} resize the batch or channel axis")
        size = [int(np.floor(d * np.float32(s))) for d, s in zip(spatial, scales[2:])]
        attrs = dict(size=size, scales=scales[2:])
    elif sizes is not None and len(sizes) == t.rank and sizes[:2] == list(t.shape[:2]):
        attrs = dict(size=sizes[2:], scales=None)
    else:
        raise Unmappable("scales / sizes are not constants that resize only the spatial axes")
    cx.emit("resize", cx.ins[:1], dict(attrs, mode=form[0], align_corners=form[1]), final=True)
    return True


def depth_to_space(cx: NodeContext) -> bool:
    # DepthToSpace CRD => pixel_shuffle; DCR => reshape [N, r, r, C, H, W], permute, reshape
    t, r = cx.type(0), int(cx.attr("blocksize"))
    if t is None or t.rank != 4:
        return False
    if _text(cx.attr("mode", "DCR")) == "CRD":
        cx.emit("pixel_shuffle", cx.ins[:1], {"upscale_factor": r}, final=True)
        return True
    _, c, h, w = t.shape
    if not all(isinstance(d, int) for d in (c, h, w)):
        return False
    y = cx.emit("reshape", cx.ins[:1], {"shape": [0, r, r, c // (r * r), h, w]})
    y = cx.emit("permute", [y], {"perm": [0, 3, 4, 1, 5, 2]})
    cx.emit("reshape", [y], {"shape": [0, c // (r * r), h * r, w * r]}, final=True)
    return True


def einsum(cx: NodeContext) -> bool:
    cx.emit("einsum", cx.ins, {"equation": _text(cx.attr("equation"))}, final=True)
    return True


def dropout(cx: NodeContext) -> bool:
    if not cx.only_first_output_used():
        return False
    if cx.has(2) and (cx.const(2) is None or bool(cx.const(2).reshape(-1)[0])):
        return False  # training mode (or unknown): not an identity
    ratio = _scalar_input(cx, 1) if cx.has(1) else cx.attr("ratio", 0.5)
    cx.emit("dropout", cx.ins[:1], {"p": float(ratio)}, final=True)
    return True


def identity(cx: NodeContext) -> bool:
    cx.emit("identity", cx.ins[:1], final=True)
    return True


def cast(cx: NodeContext) -> bool:
    dtype = dtype_name(int(cx.attr("to")))
    if dtype is None:
        return False
    cx.emit("cast", cx.ins[:1], {"dtype": dtype}, final=True)
    return True


def expand(cx: NodeContext) -> bool:
    t, shape = cx.type(0), cx.const_ints(1)
    out = cx._onnx_types.get(cx.outs[0])
    if t is None or shape is None:
        return False
    if t.is_static:
        target = list(np.broadcast_shapes(tuple(t.shape), tuple(shape)))
    else:
        if out is None or out.rank < t.rank:
            return False
        lead = out.rank - t.rank
        target = []
        for i, d in enumerate(out.shape):
            if isinstance(d, int):
                target.append(d)
            elif i >= lead and t.shape[i - lead] == d:
                target.append(-1)  # keep the input's (symbolic) dim
            else:
                return False
    cx.emit("expand", cx.ins[:1], {"shape": target}, final=True)
    return True


def slice_(cx: NodeContext) -> bool:
    t = cx.type(0)
    if cx.opset >= 10:
        starts, ends = cx.const_ints(1), cx.const_ints(2)
        axes = cx.const_ints(3) if cx.has(3) else None
        steps = cx.const_ints(4) if cx.has(4) else None
        if starts is None or ends is None or (cx.has(3) and axes is None) or (cx.has(4) and steps is None):
            return False
    else:
        starts, ends, axes, steps = cx.attr("starts"), cx.attr("ends"), cx.attr("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if t is None or not starts or any(s <= 0 for s in steps):
        return False
    y = cx.ins[0]
    for k, (a, s, e, st) in enumerate(zip(axes, starts, ends, steps)):
        dim = t.shape[a]
        if isinstance(dim, int):  # ONNX clamping, made explicit
            s = min(max(s + dim if s < 0 else s, 0), dim)
            e = min(max(e + dim if e < 0 else e, 0), dim)
        y = cx.emit(
            "slice", [y], {"axis": int(a), "start": int(s), "end": int(e), "step": int(st)}, final=k == len(axes) - 1
        )
    return True


_QDTYPES = ("int8", "uint8", "int32")


def _q_axis(cx: NodeContext, scale_index: int) -> int | None:
    st = cx.type(scale_index)
    if st is None:
        raise Unmappable("scale type unknown")
    if st.rank == 0:
        return None
    axis = int(cx.attr("axis", 1))
    r = cx.rank(0)
    return axis % r if r else axis


def quantize_linear(cx: NodeContext) -> bool:
    if int(cx.attr("block_size", 0)):
        return False
    axis = _q_axis(cx, 1)
    if cx.has(2):
        zp = cx.ins[2]
        dtype = cx.type(2).dtype
    else:
        dtype = dtype_name(int(cx.attr("output_dtype", 0))) or "uint8"
        zp = cx.add_param(f"{cx.name}/zero_point", np.zeros(cx.type(1).shape, dtype=dtype))
    if dtype not in _QDTYPES:
        return False
    cx.freeze(1, 2)
    cx.emit("quantize", [cx.ins[0], cx.ins[1], zp], {"axis": axis, "dtype": dtype}, final=True)
    return True


def dequantize_linear(cx: NodeContext) -> bool:
    t = cx.type(0)
    if int(cx.attr("block_size", 0)) or t is None or t.dtype not in _QDTYPES:
        return False
    axis = _q_axis(cx, 1)
    zp = cx.ins[2] if cx.has(2) else cx.add_param(f"{cx.name}/zero_point", np.zeros(cx.type(1).shape, dtype=t.dtype))
    cx.freeze(1, 2)
    cx.emit("dequantize", [cx.ins[0], cx.ins[1], zp], {"axis": axis}, final=True)
    return True


RULES: dict[str, Rule] = {
    "Conv": conv,  # Conv(x, W, b) => conv (auto_pad resolved)
    "ConvTranspose": conv_transpose,  # explicit pads only (output_shape / auto_pad stay opaque)
    "Gemm": gemm,  # Gemm => linear, or permute/matmul/mul/add
    "MatMul": matmul,  # MatMul(x, B) => linear(x, B.T) for a 2-D param B (or W.T)
    "BatchNormalization": batch_norm,  # inference form only
    "LayerNormalization": layer_norm,  # scale/bias of the normalized shape
    "Relu": unary("relu"),
    "Sigmoid": unary("sigmoid"),
    "Tanh": unary("tanh"),
    "HardSwish": unary("hardswish"),
    "HardSigmoid": hard_sigmoid,  # torch's (1/6, 1/2) or clip(alpha*x + beta)
    "Erf": unary("erf"),
    "Neg": unary("neg"),
    "Exp": unary("exp"),
    "Log": unary("log"),
    "Sqrt": unary("sqrt"),
    "Abs": unary("abs"),
    "Reciprocal": unary("reciprocal"),
    "Gelu": gelu,  # opset 20
    "Clip": clip,  # constant bounds only
    "Add": binary("add"),
    "Sub": binary("sub"),
    "Mul": binary("mul"),
    "Div": binary("div"),  # float only
    "Pow": binary("pow"),
    "Max": binary("maximum"),  # two inputs only
    "Min": binary("minimum"),
    "Equal": binary("equal"),
    "Less": binary("less"),
    "Greater": binary("greater"),
    "LessOrEqual": binary("less_equal"),
    "GreaterOrEqual": binary("greater_equal"),
    "Where": all_inputs("where"),
    "Einsum": einsum,
    "Resize": resize,  # torch's interpolate forms (nearest floor/asymmetric, linear/cubic half-pixel or corners)
    "DepthToSpace": depth_to_space,  # CRD => pixel_shuffle, DCR => reshape/permute/reshape
    "Concat": concat,
    "Split": split,  # sizes from input, attribute or num_outputs
    "Reshape": reshape,  # constant shape
    "Flatten": flatten,  # always 2-D, as ONNX defines it
    "Transpose": transpose,
    "Unsqueeze": unsqueeze,  # constant axes
    "Squeeze": squeeze,  # constant axes, or every size-1 dim
    "MaxPool": max_pool,  # without the indices output
    "AveragePool": avg_pool,
    "GlobalAveragePool": global_pool("adaptive_avg_pool"),  # => output_size 1x..x1
    "GlobalMaxPool": global_pool("adaptive_max_pool"),
    "ReduceMean": reduce("mean", 18),  # axes: attribute, or input from opset 18
    "ReduceSum": reduce("sum", 13),  # axes: attribute, or input from opset 13
    "Softmax": softmax,
    "Gather": gather,  # table rows => embedding; const index => select/slice
    "Dropout": dropout,  # inference only
    "Identity": identity,
    "Cast": cast,
    "Expand": expand,  # constant shape
    "Slice": slice_,  # constant starts/ends/steps > 0 => slice per axis
    "QuantizeLinear": quantize_linear,  # per-tensor or per-axis
    "DequantizeLinear": dequantize_linear,
}


def convert_node(cx: NodeContext) -> tuple[bool, str]:
    """Apply the rule for `cx`'s node; returns (mapped, reason it was not)."""
    rule = RULES.get(cx.op_type) if (cx.node.domain or "") in ("", "ai.onnx") else None
    if rule is None:
        return False, "no rule"
    try:
        if rule(cx):
            return True, ""
        reason = "form not supported"
    except Unmappable as e:
        reason = str(e)
    except InvalidNode:  # the model is broken, not just this form unsupported
        cx.rollback()
        raise
    except Exception as e:  # otherwise a rule never makes import fail; the node stays opaque
        reason = f"{type(e).__name__}: {e}"
    cx.rollback()
    return False, reason


__all__ = ["RULES", "convert_node"]
