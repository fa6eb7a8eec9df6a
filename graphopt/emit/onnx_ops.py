"""Canonical op -> ONNX node rules for `graphopt.emit.onnx`.

`RULES` maps each canonical op to `rule(cx, node)`, which appends ONNX nodes
(and constant initializers) through the `EmitContext`; the last node it adds
writes the IR node's own output names. Rules branch on `cx.opset` where the
ONNX form changed (Gelu from 20, LayerNormalization from 17, HardSwish from 14,
ReduceMean axes as an input from 18).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphopt.errors import EmitError
from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import quant_range
from graphopt.ir.types import TensorType, numpy_dtype

INT64_MAX = 2**63 - 1


def elem_type(dtype: str) -> int:
    """ONNX element type of an IR dtype name."""
    return helper.np_dtype_to_tensor_dtype(numpy_dtype(dtype))


class EmitContext:
    """Collects the ONNX nodes and initializers emitted for a graph, with fresh-name bookkeeping."""

    def __init__(self, graph: Graph, opset: int):
        self.graph, self.opset = graph, opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._values: set[str] = set(graph.values)
        self._node_names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._values:
            name, k = f"{base}_{k}", k + 1
        self._values.add(name)
        return name

    def _node_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._node_names:
            name, k = f"{base}_{k}", k + 1
        self._node_names.add(name)
        return name

    def type(self, value: str) -> TensorType | None:
        return self.graph.values[value].type

    def dtype(self, value: str) -> str:
        t = self.type(value)
        return t.dtype if t is not None else "float32"

    def add(
        self,
        node: Node,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | None = None,
        *,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        """Append `op_type(inputs)` for IR `node`; writes `outputs` if given, else one fresh value."""
        final = outputs is not None
        outs = list(outputs) if final else [self.fresh(f"{node.name}/{op_type}")]
        name = self._node_name(node.name if final else f"{node.name}/{op_type}")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs[0]

    def append(self, proto: onnx.NodeProto) -> None:
        """Append a prebuilt node (an opaque node coming back)."""
        proto.name = self._node_name(proto.name or proto.op_type)
        self.nodes.append(proto)

    def const(self, node: Node, tag: str, data: Any, dtype: str | None = None) -> str:
        name = self.fresh(f"{node.name}/{tag}")
        self.initializers.append(numpy_helper.from_array(np.asarray(data, dtype=dtype), name))
        return name

    def ints(self, node: Node, tag: str, values: Sequence[int]) -> str:
        return self.const(node, tag, np.asarray(list(values), dtype=np.int64))

    def scalar(self, node: Node, tag: str, value: float, like: str) -> str:
        return self.const(node, tag, np.asarray(value, dtype=self.dtype(like)))


Rule = Callable[[EmitContext, Node], None]


# --- rules -------------------------------------------------------------------------------


def simple(op_type: str) -> Rule:
    """Same inputs, same outputs, no attributes."""

    def rule(cx: EmitContext, n: Node) -> None:
        cx.add(n, op_type, n.inputs, n.outputs)

    return rule


def binary(op_type: str) -> Rule:
    """Elementwise binary op; inputs of another dtype are cast to the output's (torch promotion)."""

    def rule(cx: EmitContext, n: Node) -> None:
        out = cx.type(n.output)
        ins = list(n.inputs)
        if out is not None:
            for i, v in enumerate(ins):
                t = cx.type(v)
                if t is not None and t.dtype != out.dtype:
                    ins[i] = cx.add(n, "Cast", [v], to=elem_type(out.dtype))
        cx.add(n, op_type, ins, n.outputs)

    return rule


def conv(cx: EmitContext, n: Node) -> None:
    w = cx.type(n.inputs[1])
    kernel = list(w.shape[2:]) if w is not None and w.is_static else None
    a = n.attrs
    cx.add(
        n,
        "Conv",
        n.inputs,
        n.outputs,
        kernel_shape=kernel,
        strides=list(a["stride"]),
        pads=list(a["pads"]),
        dilations=list(a["dilation"]),
        group=int(a["groups"]),
    )


def conv_transpose(cx: EmitContext, n: Node) -> None:
    w = cx.type(n.inputs[1])
    kernel = list(w.shape[2:]) if w is not None and w.is_static else None
    a = n.attrs
    cx.add(
        n,
        "ConvTranspose",
        n.inputs,
        n.outputs,
        kernel_shape=kernel,
        strides=list(a["stride"]),
        pads=list(a["pads"]),
        output_padding=list(a["output_padding"]),
        dilations=list(a["dilation"]),
        group=int(a["groups"]),
    )


def linear(cx: EmitContext, n: Node) -> None:
    x, w = n.inputs[:2]
    xt = cx.type(x)
    if xt is not None and xt.rank == 2:
        cx.add(n, "Gemm", n.inputs, n.outputs, transB=1)  # x @ W.T + b
        return
    wt = cx.add(n, "Transpose", [w], perm=[1, 0])
    if len(n.inputs) == 2:
        cx.add(n, "MatMul", [x, wt], n.outputs)
    else:
        cx.add(n, "Add", [cx.add(n, "MatMul", [x, wt]), n.inputs[2]], n.outputs)


def batch_norm(cx: EmitContext, n: Node) -> None:
    cx.add(n, "BatchNormalization", n.inputs, n.outputs, epsilon=float(n.attrs["eps"]))


def layer_norm(cx: EmitContext, n: Node) -> None:
    shape = [int(d) for d in n.attrs["normalized_shape"]]
    eps = float(n.attrs["eps"])
    x = n.inputs[0]
    w = n.inputs[1] if len(n.inputs) > 1 else None
    b = n.inputs[2] if len(n.inputs) > 2 else None
    if cx.opset >= 17:
        w = w or cx.const(n, "scale", np.ones(shape), dtype=cx.dtype(x))
        cx.add(n, "LayerNormalization", [x, w] + ([b] if b else []), n.outputs, axis=-len(shape), epsilon=eps)
        return
    axes = list(range(-len(shape), 0))  # (x - mean) / sqrt(var + eps) * w + b
    d = cx.add(n, "Sub", [x, _reduce(cx, n, "ReduceMean", x, axes, True, since=18)])
    var = _reduce(cx, n, "ReduceMean", cx.add(n, "Mul", [d, d]), axes, True, since=18)
    std = cx.add(n, "Sqrt", [cx.add(n, "Add", [var, cx.scalar(n, "eps", eps, x)])])
    steps = [("Div", std)] + ([("Mul", w)] if w else []) + ([("Add", b)] if b else [])
    y = d
    for k, (op, arg) in enumerate(steps):
        y = cx.add(n, op, [y, arg], n.outputs if k == len(steps) - 1 else None)


def _reduce(
    cx: EmitContext,
    n: Node,
    op_type: str,
    x: str,
    axes: Sequence[int],
    keepdims: bool,
    outputs: Sequence[str] | None = None,
    *,
    since: int,
) -> str:
    """ReduceX over `axes`; the axes are an input from opset `since`, an attribute before."""
    if cx.opset >= since:
        return cx.add(n, op_type, [x, cx.ints(n, "axes", axes)], outputs, keepdims=int(keepdims))
    return cx.add(n, op_type, [x], outputs, axes=list(axes), keepdims=int(keepdims))


def gelu(cx: EmitContext, n: Node) -> None:
    x, approx = n.inputs[0], n.attrs["approximate"]
    if cx.opset >= 20:
        cx.add(n, "Gelu", [x], n.outputs, approximate=approx)
        return
    if approx == "tanh":  # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
        cube = cx.add(n, "Mul", [cx.add(n, "Mul", [x, x]), x])
        inner = cx.add(n, "Add", [x, cx.add(n, "Mul", [cube, cx.scalar(n, "c", 0.044715, x)])])
        core = cx.add(n, "Tanh", [cx.add(n, "Mul", [inner, cx.scalar(n, "k", math.sqrt(2 / math.pi), x)])])
    else:  # 0.5 * x * (1 + erf(x / sqrt(2)))
        core = cx.add(n, "Erf", [cx.add(n, "Div", [x, cx.scalar(n, "sqrt2", math.sqrt(2), x)])])
    one_plus = cx.add(n, "Add", [core, cx.scalar(n, "one", 1.0, x)])
    cx.add(n, "Mul", [cx.add(n, "Mul", [x, one_plus]), cx.scalar(n, "half", 0.5, x)], n.outputs)


def hardswish(cx: EmitContext, n: Node) -> None:
    if cx.opset >= 14:
        cx.add(n, "HardSwish", n.inputs, n.outputs)
    else:
        x = n.inputs[0]
        cx.add(n, "Mul", [x, cx.add(n, "HardSigmoid", [x], alpha=1 / 6, beta=0.5)], n.outputs)


def hardsigmoid(cx: EmitContext, n: Node) -> None:
    cx.add(n, "HardSigmoid", n.inputs, n.outputs, alpha=1 / 6, beta=0.5)


def silu(cx: EmitContext, n: Node) -> None:
    x = n.inputs[0]
    cx.add(n, "Mul", [x, cx.add(n, "Sigmoid", [x])], n.outputs)


def rsqrt(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Reciprocal", [cx.add(n, "Sqrt", n.inputs)], n.outputs)


def clip(cx: EmitContext, n: Node) -> None:
    x, lo, hi = n.inputs[0], n.attrs["min"], n.attrs["max"]
    bounds = [cx.scalar(n, tag, v, x) if v is not None else "" for tag, v in (("min", lo), ("max", hi))]
    while bounds and not bounds[-1]:
        bounds.pop()
    cx.add(n, "Clip", [x, *bounds], n.outputs)


def _pool(op_type: str) -> Rule:
    def rule(cx: EmitContext, n: Node) -> None:
        a = n.attrs
        extra = (
            {"dilations": list(a["dilation"])}
            if op_type == "MaxPool"
            else {"count_include_pad": int(a["count_include_pad"])}
        )
        cx.add(
            n,
            op_type,
            n.inputs,
            n.outputs,
            kernel_shape=list(a["kernel_size"]),
            strides=list(a["stride"]),
            pads=list(a["pads"]),
            ceil_mode=int(a["ceil_mode"]),
            **extra,
        )

    return rule


def _adaptive_pool(global_op: str, window_op: str) -> Rule:
    """Global pooling for 1x..x1 outputs; a fixed window when the input divides evenly."""

    def rule(cx: EmitContext, n: Node) -> None:
        t = cx.type(n.inputs[0])
        out = list(n.attrs["output_size"])
        if all(o == 1 for o in out):
            cx.add(n, global_op, n.inputs, n.outputs)
            return
        spatial = list(t.shape[2:]) if t is not None else None
        if spatial is None or not all(isinstance(d, int) for d in spatial):
            raise EmitError(f"node '{n.name}': {n.op} to {out} needs static spatial dims to emit to ONNX")
        out = [s if o is None else o for o, s in zip(out, spatial)]
        if any(s % o for s, o in zip(spatial, out)):
            raise EmitError(
                f"node '{n.name}': {n.op} from {spatial} to {out} has uneven windows; ONNX has no adaptive pooling"
            )
        k = [s // o for s, o in zip(spatial, out)]
        cx.add(n, window_op, n.inputs, n.outputs, kernel_shape=k, strides=k)

    return rule


def mean(cx: EmitContext, n: Node) -> None:
    _reduce(cx, n, "ReduceMean", n.inputs[0], n.attrs["dims"], n.attrs["keepdim"], n.outputs, since=18)


def reduce_sum(cx: EmitContext, n: Node) -> None:
    _reduce(cx, n, "ReduceSum", n.inputs[0], n.attrs["dims"], n.attrs["keepdim"], n.outputs, since=13)


def softmax(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Softmax", n.inputs, n.outputs, axis=int(n.attrs["axis"]))


def concat(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Concat", n.inputs, n.outputs, axis=int(n.attrs["axis"]))


def split(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Split", [n.inputs[0], cx.ints(n, "sizes", n.attrs["sizes"])], n.outputs, axis=int(n.attrs["axis"]))


def reshape(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Reshape", [n.inputs[0], cx.ints(n, "shape", n.attrs["shape"])], n.outputs)


def flatten(cx: EmitContext, n: Node) -> None:
    x = n.inputs[0]
    t, out = cx.type(x), cx.type(n.output)
    if out is not None and out.is_static:
        cx.add(n, "Reshape", [x, cx.ints(n, "shape", out.shape)], n.outputs)
        return
    if t is None:
        raise EmitError(f"node '{n.name}': flatten of an input of unknown rank cannot be emitted to ONNX")
    r = t.rank
    start, end = n.attrs["start_dim"] % max(r, 1), n.attrs["end_dim"] % max(r, 1)
    if start == 1 and end == r - 1:
        cx.add(n, "Flatten", [x], n.outputs, axis=1)
        return
    # Reshape to shape(x)[:start] ++ [-1] ++ shape(x)[end+1:]
    shape = cx.add(n, "Shape", [x])
    parts = []
    if start > 0:
        parts.append(cx.add(n, "Slice", [shape, cx.ints(n, "s0", [0]), cx.ints(n, "e0", [start])]))
    parts.append(cx.ints(n, "minus1", [-1]))
    if end < r - 1:
        parts.append(cx.add(n, "Slice", [shape, cx.ints(n, "s1", [end + 1]), cx.ints(n, "e1", [r])]))
    cx.add(n, "Reshape", [x, cx.add(n, "Concat", parts, axis=0)], n.outputs)


def _axes_op(op_type: str) -> Rule:
    # Squeeze / Unsqueeze with the axes as an input (opset 13+); no axes is Identity
    def rule(cx: EmitContext, n: Node) -> None:
        axes = [int(a) for a in n.attrs["axes"]]
        if not axes:
            cx.add(n, "Identity", n.inputs, n.outputs)
            return
        cx.add(n, op_type, [n.inputs[0], cx.ints(n, "axes", axes)], n.outputs)

    return rule


def permute(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Transpose", n.inputs, n.outputs, perm=[int(p) for p in n.attrs["perm"]])


def expand(cx: EmitContext, n: Node) -> None:
    # -1 keeps a dim; ONNX Expand broadcasts both ways, so 1 does the same
    shape = [1 if d == -1 else int(d) for d in n.attrs["shape"]]
    cx.add(n, "Expand", [n.inputs[0], cx.ints(n, "shape", shape)], n.outputs)


def slice_(cx: EmitContext, n: Node) -> None:
    a = n.attrs
    ins = [
        n.inputs[0],
        cx.ints(n, "starts", [a["start"]]),
        cx.ints(n, "ends", [a["end"]]),
        cx.ints(n, "axes", [a["axis"]]),
        cx.ints(n, "steps", [a["step"]]),
    ]
    cx.add(n, "Slice", ins, n.outputs)


def select(cx: EmitContext, n: Node) -> None:
    axis, i = int(n.attrs["axis"]), int(n.attrs["index"])
    end = INT64_MAX if i == -1 else i + 1
    one = cx.add(
        n, "Slice", [n.inputs[0], cx.ints(n, "starts", [i]), cx.ints(n, "ends", [end]), cx.ints(n, "axes", [axis])]
    )
    cx.add(n, "Squeeze", [one, cx.ints(n, "squeeze_axes", [axis])], n.outputs)


# mode -> (ONNX mode, coordinate_transformation_mode without align_corners, nearest_mode)
_RESIZE = {
    "nearest": ("nearest", "asymmetric", "floor"),
    "nearest-exact": ("nearest", "half_pixel", "round_prefer_ceil"),
    "linear": ("linear", "half_pixel", None),
    "cubic": ("cubic", "half_pixel", None),
}


def resize(cx: EmitContext, n: Node) -> None:
    # Resize(x, roi="", scales) where torch's scales place the coordinates, else Resize(x, "", "", sizes)
    a, t = n.attrs, cx.type(n.inputs[0])
    mode, coords, nearest = _RESIZE[a["mode"]]
    scales = a["scales"]
    attrs = dict(
        mode=mode,
        coordinate_transformation_mode="align_corners" if a["align_corners"] else coords,
        nearest_mode=nearest,
        cubic_coeff_a=-0.75 if mode == "cubic" else None,
    )
    if scales is not None and None not in scales and not a["align_corners"]:
        data = np.asarray([1.0, 1.0, *scales], dtype=np.float32)
        out = cx.type(n.output)
        if out is None or list(out.shape[2:]) == [int(np.floor(s * d)) for s, d in zip(data[2:], t.shape[2:])]:
            cx.add(n, "Resize", [n.inputs[0], "", cx.const(n, "scales", data)], n.outputs, **attrs)
            return
    if t is None or not all(isinstance(d, int) for d in t.shape[:2]):
        raise EmitError(f"node '{n.name}': resize to sizes needs static batch and channel dims to emit to ONNX")
    sizes = cx.ints(n, "sizes", [*t.shape[:2], *a["size"]])
    cx.add(n, "Resize", [n.inputs[0], "", "", sizes], n.outputs, **attrs)


def pixel_unshuffle(cx: EmitContext, n: Node) -> None:
    # [N, C, H*r, W*r] -> Reshape [N, C, H, r, W, r] -> Transpose -> Reshape [N, C*r*r, H, W]
    t, r = cx.type(n.inputs[0]), int(n.attrs["downscale_factor"])
    if t is None or not all(isinstance(d, int) for d in t.shape[1:]):
        raise EmitError(f"node '{n.name}': pixel_unshuffle needs static channel and spatial dims to emit to ONNX")
    _, c, h, w = t.shape
    y = cx.add(n, "Reshape", [n.inputs[0], cx.ints(n, "split", [0, c, h // r, r, w // r, r])])
    y = cx.add(n, "Transpose", [y], perm=[0, 1, 3, 5, 2, 4])
    cx.add(n, "Reshape", [y, cx.ints(n, "merge", [0, c * r * r, h // r, w // r])], n.outputs)


def where(cx: EmitContext, n: Node) -> None:
    # Where(cond, a, b) with a and b cast to the result dtype (ONNX wants them equal)
    out = cx.dtype(n.output)
    cond, a, b = n.inputs
    a, b = (v if cx.dtype(v) == out else cx.add(n, "Cast", [v], to=elem_type(out)) for v in (a, b))
    cx.add(n, "Where", [cond, a, b], n.outputs)


def compare(op_type: str) -> Rule:
    """A comparison; operands cast to the dtype torch compares in (ONNX wants them equal)."""

    def rule(cx: EmitContext, n: Node) -> None:
        import torch

        from graphopt.ir.types import dtype_from_torch, torch_dtype

        types = [cx.type(v) for v in n.inputs]
        probes = [torch.empty([1] * min(t.rank, 1), dtype=torch_dtype(t.dtype)) for t in types]
        common = dtype_from_torch(torch.result_type(*probes))
        ins = [
            v if t.dtype == common else cx.add(n, "Cast", [v], to=elem_type(common)) for v, t in zip(n.inputs, types)
        ]
        cx.add(n, op_type, ins, n.outputs)

    return rule


def einsum(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Einsum", n.inputs, n.outputs, equation=n.attrs["equation"])


def embedding(cx: EmitContext, n: Node) -> None:
    indices, weight = n.inputs
    cx.add(n, "Gather", [weight, indices], n.outputs, axis=0)


def cast(cx: EmitContext, n: Node) -> None:
    cx.add(n, "Cast", n.inputs, n.outputs, to=elem_type(n.attrs["dtype"]))


# The first opset whose QuantizeLinear / DequantizeLinear takes each quantized dtype.
_Q_OPSET = {
    "int8": 13,
    "uint8": 13,
    "int32": 13,
    "float8_e4m3fn": 19,
    "float8_e5m2": 19,
    "int16": 21,
    "int4": 21,
    "uint4": 21,
}


def _q_attrs(cx: EmitContext, n: Node, dtype: str) -> dict:
    need = max(_Q_OPSET.get(dtype, 99), 21 if n.attrs.get("block_size") else 13)
    if need > cx.opset:
        raise EmitError(
            f"node '{n.name}': {n.op} to/from {dtype}"
            f"{' with block_size' if n.attrs.get('block_size') else ''} needs opset >= {need} "
            f"(emitting opset {cx.opset})"
        )
    attrs = {"axis": n.attrs["axis"]}
    if n.attrs.get("block_size"):
        attrs["block_size"] = int(n.attrs["block_size"])
    return attrs


def quantize(cx: EmitContext, n: Node) -> None:
    x, scale, zp = n.inputs
    dtype = n.attrs["dtype"]
    attrs = _q_attrs(cx, n, dtype)
    if cx.dtype(zp) != dtype:
        zp = cx.add(n, "Cast", [zp], to=elem_type(dtype))  # the zero point's type is the output type
    lo, hi = quant_range(dtype, n.attrs["qmin"], n.attrs["qmax"])
    if (lo, hi) == quant_range(dtype):
        cx.add(n, "QuantizeLinear", [x, scale, zp], n.outputs, **attrs)
        return
    if dtype not in ("int8", "uint8", "int16", "int32"):
        raise EmitError(f"node '{n.name}': a narrowed range [{lo}, {hi}] of {dtype} has no ONNX form")
    q = cx.add(n, "QuantizeLinear", [x, scale, zp], **attrs)  # then saturate to [qmin, qmax]
    bounds = [cx.const(n, tag, np.array(v, dtype=numpy_dtype(dtype))) for tag, v in (("qmin", lo), ("qmax", hi))]
    cx.add(n, "Clip", [q, *bounds], n.outputs)


def dequantize(cx: EmitContext, n: Node) -> None:
    q, scale, zp = n.inputs
    attrs = _q_attrs(cx, n, cx.dtype(q))
    if cx.dtype(zp) != cx.dtype(q):
        zp = cx.add(n, "Cast", [zp], to=elem_type(cx.dtype(q)))
    cx.add(n, "DequantizeLinear", [q, scale, zp], n.outputs, **attrs)


RULES: dict[str, Rule] = {
    "conv": conv,  # Conv (kernel_shape from the weight)
    "conv_transpose": conv_transpose,  # ConvTranspose (kernel_shape from the weight)
    "linear": linear,  # Gemm(transB=1) for 2-D x; else MatMul(x, W.T) + b
    "matmul": simple("MatMul"),
    "batch_norm": batch_norm,  # BatchNormalization
    "layer_norm": layer_norm,  # LayerNormalization (17+), else its formula
    "relu": simple("Relu"),
    "sigmoid": simple("Sigmoid"),
    "tanh": simple("Tanh"),
    "silu": silu,  # x * Sigmoid(x)
    "hardswish": hardswish,  # HardSwish (14+), else x * HardSigmoid(x)
    "hardsigmoid": hardsigmoid,  # HardSigmoid(alpha=1/6, beta=1/2)
    "neg": simple("Neg"),
    "exp": simple("Exp"),
    "log": simple("Log"),
    "sqrt": simple("Sqrt"),
    "rsqrt": rsqrt,  # Reciprocal(Sqrt(x))
    "erf": simple("Erf"),
    "abs": simple("Abs"),
    "reciprocal": simple("Reciprocal"),
    "gelu": gelu,  # Gelu (20+), else the erf / tanh formula
    "clip": clip,  # Clip(x, min, max) with constant bounds
    "add": binary("Add"),
    "sub": binary("Sub"),
    "mul": binary("Mul"),
    "div": binary("Div"),
    "pow": binary("Pow"),
    "maximum": binary("Max"),
    "minimum": binary("Min"),
    "equal": compare("Equal"),  # operands cast to torch's compare dtype
    "less": compare("Less"),
    "greater": compare("Greater"),
    "less_equal": compare("LessOrEqual"),
    "greater_equal": compare("GreaterOrEqual"),
    "where": where,  # Where (branches cast to the result dtype)
    "einsum": einsum,  # Einsum
    "max_pool": _pool("MaxPool"),
    "avg_pool": _pool("AveragePool"),
    "adaptive_avg_pool": _adaptive_pool("GlobalAveragePool", "AveragePool"),
    "adaptive_max_pool": _adaptive_pool("GlobalMaxPool", "MaxPool"),
    "mean": mean,  # ReduceMean
    "sum": reduce_sum,  # ReduceSum
    "softmax": softmax,
    "concat": concat,
    "split": split,  # Split with a sizes input
    "reshape": reshape,  # Reshape with a constant shape
    "flatten": flatten,  # Reshape (static), Flatten (start 1), or Shape-built Reshape
    "squeeze": _axes_op("Squeeze"),
    "unsqueeze": _axes_op("Unsqueeze"),
    "permute": permute,  # Transpose
    "expand": expand,  # Expand with a constant shape
    "slice": slice_,  # Slice on one axis
    "select": select,  # Slice + Squeeze
    "resize": resize,  # Resize with scales (torch's scale factors) or sizes
    "pixel_shuffle": lambda cx, n: cx.add(
        n, "DepthToSpace", n.inputs, n.outputs, blocksize=int(n.attrs["upscale_factor"]), mode="CRD"
    ),
    "pixel_unshuffle": pixel_unshuffle,  # Reshape, Transpose, Reshape (SpaceToDepth orders channels DCR)
    "embedding": embedding,  # Gather(weight, indices, axis=0)
    "cast": cast,
    "identity": simple("Identity"),
    "dropout": simple("Identity"),  # inference semantics
    "quantize": quantize,  # QuantizeLinear (axis = per-channel axis)
    "dequantize": dequantize,  # DequantizeLinear
}
