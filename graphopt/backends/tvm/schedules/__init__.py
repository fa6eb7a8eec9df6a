"""graphopt's CPU schedule rules, in the style of TVM's dlight.

A rule recognises a TIR kernel pattern and applies a known-good schedule;
``cpu_rules``  lists them in the order they are tried, the generic
``Fallback``  last. A rule that fails part-way logs one line and the kernel
goes to the next rule, so a build never fails for want of a schedule.

======================== ==============================================
rule                     kernels
======================== ==============================================
``Conv2dInt8``           integer conv2d on the dot-product instruction
``MatmulInt8``           integer matmul (constant weight), same
``DepthwiseConv2dInt8``  integer depthwise conv2d, vectorized over channels
``Conv2dNCHW``           conv2d / grouped conv2d, NCHW, + epilogue
``DepthwiseConv2dNCHW``  depthwise conv2d, NCHW, + epilogue
``Matmul``               dense, matmul, batched matmul, + epilogue
``Reduction``            softmax, layer norm, pooling, mean
``Fallback``             everything else (elementwise, copies, ...)
======================== ==============================================

The conv2d rule repacks each weight into channel blocks with a block marked
``meta_schedule.layout_rewrite_preproc``; ``schedule.build`` splits those
blocks out and folds them on constant weights, so the packing costs build
time, not run time. The integer rules (tried first) do the same for the
layout the target's int8 dot product reads (``dot_product``: x86 VNNI
``vpdpbusd``  on uint8 x int8, aarch64 ``sdot`` on int8 x int8); integer
kernels they do not fit take the generic rules below them, which are
dtype-agnostic (parallel, vectorized int32 accumulation).
"""

from __future__ import annotations

from tvm.target import Target

from .common import GraphoptCPURule
from .conv2d import Conv2dNCHW
from .conv2d_int8 import Conv2dInt8
from .depthwise import DepthwiseConv2dNCHW
from .depthwise_int8 import DepthwiseConv2dInt8
from .fallback import Fallback
from .matmul import Matmul
from .matmul_int8 import MatmulInt8
from .reduction import Reduction

__all__ = [
    "Conv2dInt8",
    "Conv2dNCHW",
    "DepthwiseConv2dInt8",
    "DepthwiseConv2dNCHW",
    "Fallback",
    "GraphoptCPURule",
    "Matmul",
    "MatmulInt8",
    "Reduction",
    "cpu_rules",
]


def cpu_rules(target: Target | None = None) -> list[GraphoptCPURule]:  # noqa: ARG001  (same rules for x86 and arm)
    """The CPU rules in the order they are tried (vector widths come from the target at apply time)."""
    return [
        Conv2dInt8(),
        MatmulInt8(),
        DepthwiseConv2dInt8(),
        Conv2dNCHW(),
        DepthwiseConv2dNCHW(),
        Matmul(),
        Reduction(),
        Fallback(),
    ]
