"""qdq-to-integer shapes its operands for the target's int8 dot product: on x86 VNNI (u8 x s8) int8
activations are shifted to uint8 (+128, zero point +128), a conv's input channels are padded to the
reduction width (the 3-channel stem to 4), and a max-pool between quantizations runs on the integers.
The built model matches the float reference within one quantisation step, and the generic LLVM target
(no dot product) builds the unshifted program."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from test_tvm_integer_lowering import Builder, conv_attrs  # noqa: E402
from tvm import relax  # noqa: E402

from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.backends.tvm.lower import lower_to_relax  # noqa: E402
from graphopt.backends.tvm.relax_passes import graphopt_relax_passes  # noqa: E402
from graphopt.backends.tvm.schedule import build, legalize  # noqa: E402
from graphopt.backends.tvm.schedules import cpu_rules  # noqa: E402
from graphopt.backends.tvm.schedules.dot_product import dot_product  # noqa: E402
from graphopt.backends.tvm.targets import resolve_target  # noqa: E402
from graphopt.ir.types import TensorType  # noqa: E402

X86 = resolve_target("x86")
HAS_VNNI = dot_product(X86) is not None
GENERIC = {"kind": "llvm"}  # no CPU features: no dot product


def int8_net(batch: int = 2):
    """An int8 stem (3 channels, 7x7 stride 2), a max-pool between equal quantizations, a 3x3 stride-2
    conv, a depthwise conv, and a linear: every activation int8, non-square image."""
    b = Builder("int8_net")
    x = b.g.add_input("x", TensorType((batch, 3, 19, 14)))
    w = b.weight((16, 3, 7, 7), per_channel=True)
    y = b.node("relu", [b.node("conv", [b.qdq(x, 0.03, 0, "int8"), w], **conv_attrs((2, 2), (3, 3, 3, 3)))])
    s, z = 0.02, -128
    y = b.node("dequantize", [b.quantize(y, s, z, "int8"), b.param(np.float32(s)), b.param(np.int8(z))])
    pooled = b.node("max_pool", [y], kernel_size=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), dilation=(1, 1))
    y = b.qdq(pooled, s, z, "int8")  # the same quantisation: pooled in integers
    y = b.node("conv", [y, b.weight((32, 16, 3, 3), per_channel=True)], **conv_attrs((2, 2), (1, 1, 1, 1)))
    y = b.qdq(b.node("relu", [y]), 0.05, -128, "int8")
    y = b.node("conv", [y, b.weight((32, 1, 3, 3), per_channel=True)], **conv_attrs(pads=(1, 1, 1, 1), groups=32))
    y = b.qdq(y, 0.04, 3, "int8")
    y = b.node("flatten", [b.node("adaptive_avg_pool", [y], output_size=(1, 1))])
    y = b.node("linear", [b.qdq(y, 0.01, -5, "int8"), b.weight((16, 32), per_channel=True)])
    out = b.quantize(y, 0.1, 2, "int8")
    b.g.set_outputs([out])
    b.g.verify()
    return b.g


def _ops(mod) -> dict[str, list]:
    """op name -> [(input dtypes, first input's shape)] over main."""
    found: dict[str, list] = {}

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            args = [a for a in e.args if isinstance(a.ty, relax.TensorType)]
            found.setdefault(e.op.name, []).append(
                (tuple(str(a.ty.dtype) for a in args), [[int(d) for d in a.ty.shape.values] for a in args])
            )

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


@pytest.mark.skipif(not HAS_VNNI, reason="this x86 host has no AVX-512 VNNI")
def test_x86_operands_suit_vnni():
    mod = lower_to_relax(int8_net())
    with X86:
        after = tvm.transform.Sequential(graphopt_relax_passes(X86))(mod)
    ops = _ops(after)
    convs = ops["relax.nn.conv2d"]
    stem, conv, depthwise = convs
    assert stem[0] == ("uint8", "int8") and stem[1][1] == [16, 4, 7, 7]  # shifted, channels padded 3 -> 4
    assert conv[0] == ("uint8", "int8")
    assert depthwise[0] == ("int8", "int8")  # depthwise: no dot product, no shift
    assert ops["relax.matmul"][0][0] == ("uint8", "int8")
    assert ops["relax.nn.max_pool2d"][0][0] == ("int8",)  # pooled in integers
    # every conv and the linear is scheduled by an integer rule
    kernels = [f for _, f in legalize(mod, X86).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    with X86:
        taken = [type(next(r for r in cpu_rules(X86) if r.apply(f, X86, False))).__name__ for f in kernels]
    assert taken.count("Conv2dInt8") == 2 and "DepthwiseConv2dInt8" in taken, taken


def test_generic_llvm_keeps_int8_operands():
    generic = resolve_target(GENERIC)
    with generic:
        after = tvm.transform.Sequential(graphopt_relax_passes(generic))(lower_to_relax(int8_net()))
    ops = _ops(after)
    assert [c[0] for c in ops["relax.nn.conv2d"]] == [("int8", "int8")] * 3
    assert ops["relax.nn.conv2d"][0][1][1] == [16, 3, 7, 7]


@pytest.mark.parametrize("target", ["x86", GENERIC], ids=["x86", "generic-llvm"])
def test_int8_net_matches_reference(target):
    g = int8_net()
    x = np.random.default_rng(3).uniform(-4, 4, (2, 3, 19, 14)).astype("float32")
    got = compile_graph(g, target)(x)
    want = np.asarray(g.run([x])[0])
    assert got.dtype == want.dtype == np.int8 and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 20, diff.max()
    assert len(np.unique(got)) > 4  # not saturated


def test_arm_dotprod_builds_with_sdot_and_channel_vectors():
    """aarch64 with dotprod: int8 data as is (sdot is s8 x s8), the stem padded to 4 channels, sdot in the
    assembly, the depthwise conv on its integer rule; the build succeeds on this machine."""
    arm = resolve_target("arm-dotprod")
    mod = lower_to_relax(int8_net(batch=1))
    with arm:
        after = tvm.transform.Sequential(graphopt_relax_passes(arm))(mod)
    convs = _ops(after)["relax.nn.conv2d"]
    assert convs[0][0] == ("int8", "int8") and convs[0][1][1] == [16, 4, 7, 7]
    kernels = [f for _, f in legalize(mod, arm).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    with arm:
        taken = [type(next(r for r in cpu_rules(arm) if r.apply(f, arm, False))).__name__ for f in kernels]
    assert "Conv2dInt8" in taken and "DepthwiseConv2dInt8" in taken, taken
    exe = build(mod, arm)
    asm = "".join(m.inspect_source("asm") for m in [exe.mod, *exe.mod.imports] if m.kind == "llvm")
    assert "sdot" in asm
