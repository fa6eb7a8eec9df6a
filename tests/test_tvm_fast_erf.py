"""float32 erf / GELU on the CPU presets: legalized as TVM's rational approximation (``schedules.fast_math``),
which vectorizes, instead of a scalar ``erff`` call per element; accurate to 1e-6 against ``math.erf``."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402

from graphopt.backends.tvm.schedule import build  # noqa: E402

R = relax.op


def unary_module(op, shape, dtype="float32"):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op(x)))
        bb.emit_func_output(out)
    return bb.get()


def _run(executable, x: np.ndarray) -> np.ndarray:
    return relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _asm(executable) -> str:
    return "".join(m.inspect_source("asm") for m in [executable.mod, *executable.mod.imports] if m.kind == "llvm")


def test_erf_within_1e6_of_math_erf():
    grid = np.concatenate([np.linspace(-6, 6, 4001), [0.0, -0.0, 1e-30, -1e-7, 3.999, 4.0, 4.5, 30.0, -np.inf, np.inf]])
    x = grid.astype("float32").reshape(1, -1)
    got = _run(build(unary_module(R.erf, x.shape), "x86"), x)
    want = np.array([math.erf(float(v)) for v in x.reshape(-1)]).reshape(x.shape)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - want)) < 1e-6
    assert np.all(np.abs(got) <= 1 + 1e-6)  # the rational form may round a hair past 1


@pytest.mark.parametrize("shape", [(3, 37), (2, 5, 17)], ids=["odd-width", "batch2-3d"])
def test_gelu_matches_torch(shape):
    x = np.random.default_rng(0).normal(0, 3, shape).astype("float32")
    got = _run(build(unary_module(R.nn.gelu, shape), "x86"), x)
    want = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_float64_erf_keeps_the_exact_legalization():
    x = np.linspace(-3, 3, 37).reshape(1, -1)
    got = _run(build(unary_module(R.erf, x.shape, "float64"), "x86"), x)
    np.testing.assert_allclose(got, [[math.erf(v) for v in x[0]]], atol=1e-15)


@pytest.mark.parametrize("target", ["x86", "arm"])
def test_gelu_has_no_scalar_erf_call(target):
    asm = _asm(build(unary_module(R.nn.gelu, (8, 64)), target))
    assert not re.search(r"\berff?\b", asm), "a libm erf call is left in the kernel"
    if target == "x86":
        assert re.search(r"vfmadd\w*\s+[^\n]*%zmm", asm), "the polynomial is not vectorized"
