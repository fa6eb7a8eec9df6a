"""Integer conv2d / matmul rules: the kernels ``qdq-to-integer`` produces, tensorized with the target's
dot product (x86 VNNI ``vpdpbusd``, aarch64 ``sdot``), compute exactly what the unscheduled kernels compute.

Each case is an integer Relax function of the form ``qdq-to-integer`` emits
(int8/uint8 operands, ``out_dtype="int32"``, an optional requantisation
epilogue), built unscheduled and with the default CPU rules; outputs must be
equal, and equal to torch's float64 result of the same integer arithmetic.
Odd shapes fall back to the generic rules, still exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402

from graphopt.backends.tvm import schedules  # noqa: E402
from graphopt.backends.tvm.schedule import build, legalize  # noqa: E402
from graphopt.backends.tvm.schedules.dot_product import dot_product  # noqa: E402
from graphopt.backends.tvm.targets import resolve_target  # noqa: E402

X86 = resolve_target("x86")
ARM = resolve_target("arm-dotprod")
HAS_VNNI = dot_product(X86) is not None
R = relax.op


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _data(shape, dtype, seed=0) -> np.ndarray:
    info = np.iinfo(dtype)
    return _rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def _weight(shape, seed=1) -> np.ndarray:
    return _rng(seed).integers(-127, 128, shape).astype("int8")


def _requantize(bb, acc, channels: int, axis: int, rank: int, out_dtype: str):
    """The epilogue qdq-to-integer emits: + int32 bias, float32 scale, round, + zero point, clip, cast."""
    shape = [1] * rank
    shape[axis] = channels
    bias = _rng(5).integers(-3000, 3000, shape).astype("int32")
    scale = _rng(6).uniform(0.001, 0.004, shape).astype("float32")
    acc = bb.emit(R.add(acc, relax.const(bias)))
    y = bb.emit(R.round(R.multiply(R.astype(acc, "float32"), relax.const(scale))))
    info = np.iinfo(out_dtype)
    y = bb.emit(R.add(y, relax.const(np.float32(3))))
    return bb.emit(R.astype(R.clip(y, float(info.min), float(info.max)), out_dtype))


def conv_module(x_shape, x_dtype, w, *, stride=1, padding=0, dilation=1, groups=1, epilogue="uint8"):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, x_dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(
                R.nn.conv2d(
                    x,
                    relax.const(w),
                    strides=stride,
                    padding=padding,
                    dilation=dilation,
                    groups=groups,
                    out_dtype="int32",
                )
            )
            if epilogue:
                acc = _requantize(bb, acc, w.shape[0], 1, 4, epilogue)
            out = bb.emit_output(acc)
        bb.emit_func_output(out)
    return bb.get()


def conv_reference(x, w, *, stride=1, padding=0, dilation=1, groups=1):
    t = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)),
        torch.from_numpy(w.astype(np.float64)),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    return t.numpy().astype(np.int64)


def matmul_module(a_shape, a_dtype, b, *, epilogue="int8"):
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, a_dtype))
    with bb.function("main", [a]):
        with bb.dataflow():
            acc = bb.emit(R.matmul(a, relax.const(b), out_dtype="int32"))
            if epilogue:
                acc = _requantize(bb, acc, b.shape[1], len(a_shape) - 1, len(a_shape), epilogue)
            out = bb.emit_output(acc)
        bb.emit_func_output(out)
    return bb.get()


def _run(executable, *inputs) -> np.ndarray:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


def _rules_taken(mod, target) -> list[str]:
    kernels = [f for _, f in legalize(mod, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    with target:
        return [
            type(next(r for r in schedules.cpu_rules(target) if r.apply(f, target, False) is not None)).__name__
            for f in kernels
        ]


def _unscheduled(mod, target):
    return mod


# (id, x shape, x dtype, weight shape, conv options, epilogue dtype, rule expected on x86 with VNNI)
CONV_CASES = [
    ("u8-3x3-pad-c64", (1, 32, 14, 14), "uint8", (64, 32, 3, 3), dict(padding=1), "uint8", "Conv2dInt8"),
    ("u8-1x1-stride2-batch2-nonsquare", (2, 16, 9, 13), "uint8", (32, 16, 1, 1), dict(stride=2), None, "Conv2dInt8"),
    ("u8-7x7-stride2-pad3", (1, 4, 23, 17), "uint8", (16, 4, 7, 7), dict(stride=2, padding=3), "int8", "Conv2dInt8"),
    (
        "u8-dilation2-groups2",
        (1, 16, 12, 9),
        "uint8",
        (64, 8, 3, 3),
        dict(padding=2, dilation=2, groups=2),
        "uint8",
        "Conv2dInt8",
    ),
    ("u8-odd-channels", (1, 3, 11, 10), "uint8", (24, 3, 3, 3), dict(padding=1), "uint8", "Conv2dNCHW"),
    ("u8-out-not-8", (1, 8, 7, 7), "uint8", (20, 8, 3, 3), dict(padding=1), "uint8", "Conv2dNCHW"),
    ("u8-out-24-ymm-stride2", (2, 16, 9, 7), "uint8", (24, 16, 3, 3), dict(padding=1, stride=2), None, "Conv2dInt8"),
    ("i8-on-x86", (1, 16, 8, 8), "int8", (32, 16, 3, 3), dict(padding=1), "int8", "Conv2dNCHW"),
    (
        "u8-depthwise",
        (1, 32, 10, 10),
        "uint8",
        (32, 1, 3, 3),
        dict(padding=1, groups=32),
        "uint8",
        "DepthwiseConv2dInt8",
    ),
    # depthwise, vectorized over channels: 24 channels take half vectors; stride 2, batch 2, non-square
    (
        "i8-depthwise-24-stride2-batch2",
        (2, 24, 9, 13),
        "int8",
        (24, 1, 3, 3),
        dict(stride=2, padding=1, groups=24),
        "int8",
        "DepthwiseConv2dInt8",
    ),
    (
        "u8-depthwise-5x5-no-epilogue",
        (1, 48, 11, 7),
        "uint8",
        (48, 1, 5, 5),
        dict(padding=2, groups=48),
        None,
        "DepthwiseConv2dInt8",
    ),
    (
        "i8-depthwise-dilation2-unpadded",
        (1, 16, 12, 10),
        "int8",
        (16, 1, 3, 3),
        dict(dilation=2, groups=16),
        None,
        "DepthwiseConv2dInt8",
    ),
    # channels not a multiple of the half vector (8): the generic depthwise rule
    (
        "u8-depthwise-odd-channels",
        (1, 20, 9, 9),
        "uint8",
        (20, 1, 3, 3),
        dict(padding=1, groups=20),
        "uint8",
        "DepthwiseConv2dNCHW",
    ),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_int8_conv_equals_unscheduled(case):
    name, x_shape, x_dtype, w_shape, options, epilogue, rule = case
    x, w = _data(x_shape, x_dtype), _weight(w_shape)
    mod = conv_module(x_shape, x_dtype, w, **options, epilogue=epilogue)
    if HAS_VNNI:
        taken = _rules_taken(mod, X86)
        assert rule in taken, f"{name}: expected {rule}, rules taken: {taken}"
    plain = _run(build(mod, X86, schedule=_unscheduled), x)
    scheduled = _run(build(mod, X86), x)
    np.testing.assert_array_equal(scheduled, plain)
    if epilogue is None:
        np.testing.assert_array_equal(scheduled, conv_reference(x, w, **options))


# (id, a shape, a dtype, b shape [K, N], epilogue dtype, rule expected on x86 with VNNI)
MATMUL_CASES = [
    ("u8-linear", (5, 64), "uint8", (64, 48), "int8", "MatmulInt8"),
    ("u8-linear-3d", (2, 7, 32), "uint8", (32, 32), "uint8", "MatmulInt8"),
    ("u8-no-epilogue", (3, 16), "uint8", (16, 16), None, "MatmulInt8"),
    ("u8-odd-k", (4, 37), "uint8", (37, 32), "int8", "Matmul"),
    ("u8-odd-n", (4, 32), "uint8", (32, 23), "int8", "Matmul"),
    ("u8-n-24-ymm", (5, 32), "uint8", (32, 24), "uint8", "MatmulInt8"),
    ("i8-on-x86", (4, 32), "int8", (32, 32), "int8", "Matmul"),
]


@pytest.mark.parametrize("case", MATMUL_CASES, ids=[c[0] for c in MATMUL_CASES])
def test_int8_matmul_equals_unscheduled(case):
    name, a_shape, a_dtype, b_shape, epilogue, rule = case
    a, b = _data(a_shape, a_dtype), _weight(b_shape)
    mod = matmul_module(a_shape, a_dtype, b, epilogue=epilogue)
    if HAS_VNNI:
        taken = _rules_taken(mod, X86)
        assert rule in taken, f"{name}: expected {rule}, rules taken: {taken}"
    plain = _run(build(mod, X86, schedule=_unscheduled), a)
    scheduled = _run(build(mod, X86), a)
    np.testing.assert_array_equal(scheduled, plain)
    if epilogue is None:
        np.testing.assert_array_equal(scheduled, a.astype(np.int64) @ b.astype(np.int64))


def _llvm_asm(executable) -> str:
    """The assembly of the kernels: the llvm module the VM executable imports."""
    mods = [executable.mod, *executable.mod.imports]
    return "".join(m.inspect_source("asm") for m in mods if m.kind == "llvm")


@pytest.mark.skipif(not HAS_VNNI, reason="this x86 host has no AVX-512 VNNI")
def test_x86_assembly_uses_vpdpbusd():
    conv = conv_module((1, 32, 14, 14), "uint8", _weight((64, 32, 3, 3)), padding=1)
    linear = matmul_module((4, 64), "uint8", _weight((64, 32)))
    for mod in (conv, linear):
        asm = _llvm_asm(build(mod, X86))
        assert re.search(r"vpdpbusd\s+[^\n]*%zmm", asm), "no 512-bit vpdpbusd in the scheduled kernels"
    # 24 output channels: the 256-bit form
    conv24 = conv_module((1, 16, 9, 7), "uint8", _weight((24, 16, 3, 3)))
    for mod in (conv24, matmul_module((4, 32), "uint8", _weight((32, 24)))):
        asm = _llvm_asm(build(mod, X86))
        assert re.search(r"vpdpbusd\s+[^\n]*%ymm", asm), "no 256-bit vpdpbusd for 24 channels"


def test_arm_dotprod_assembly_uses_sdot():
    conv = conv_module((1, 32, 14, 14), "int8", _weight((64, 32, 3, 3)), padding=1, epilogue="int8")
    linear = matmul_module((4, 64), "int8", _weight((64, 32)))
    for mod in (conv, linear):
        assert "Conv2dInt8" in _rules_taken(mod, ARM) or "MatmulInt8" in _rules_taken(mod, ARM)
        assert "sdot" in _llvm_asm(build(mod, ARM))
    # the plain arm preset has no dot product: generic rules, no sdot
    assert "sdot" not in _llvm_asm(build(conv, "arm"))


@pytest.mark.slow
def test_arm_sdot_conv_runs_on_emulated_aarch64(tmp_path):
    """The sdot-tensorized conv and matmul compute the unscheduled result on (emulated) aarch64."""
    from graphopt.backends.tvm.emulator import emulated_aarch64_server, emulator_available  # noqa: PLC0415
    from graphopt.backends.tvm.rpc import run_remote_vm  # noqa: PLC0415

    if not emulator_available():
        pytest.skip("emulated aarch64 root not set up (scripts/setup_aarch64_emulator.sh)")
    from tvm.support.cc import cross_compiler  # noqa: PLC0415

    x, w = _data((1, 16, 9, 11), "int8"), _weight((32, 16, 3, 3))
    mod = conv_module(x.shape, "int8", w, padding=1, stride=2, epilogue=None)
    path = tmp_path / "conv.so"
    build(mod, ARM).export_library(str(path), fcompile=cross_compiler("aarch64-linux-gnu-g++"))
    with emulated_aarch64_server() as emu:
        (got,) = run_remote_vm(emu.connect(), path, [x])
    np.testing.assert_array_equal(got, conv_reference(x, w, padding=1, stride=2))
