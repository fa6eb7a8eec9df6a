"""graphopt's Relax passes: Before/Expected TVMScript, compiled numerics, and that build and
tuning both run them once, before legalisation."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm.script import ir as I  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from graphopt.backends.tvm.compiled import compile_graph  # noqa: E402
from graphopt.backends.tvm.lower import lower_to_relax  # noqa: E402
from graphopt.backends.tvm.relax_passes import (  # noqa: E402
    GRAPHOPT_RELAX_PASSES,
    fold_qdq_round_trip,
    graphopt_relax_passes,
)
from graphopt.backends.tvm.schedule import build  # noqa: E402
from graphopt.backends.tvm.tuning import tune  # noqa: E402
from graphopt.ir.graph import Graph  # noqa: E402
from graphopt.ir.types import TensorType  # noqa: E402

FOLD = "graphopt.FoldQDQRoundTrip"


def round_trip(s1=0.05, z1=3, s2=0.05, z2=3, deq_dtype="float32", out_dtype="int8"):
    """x -> quantize -> dequantize(s1, z1) -> quantize(s2, z2), per tensor."""

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), out_dtype):
            with R.dataflow():
                q = R.quantize(x, R.const(0.05, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
                d = R.dequantize(q, R.const(s1, "float32"), R.const(z1, "int8"), axis=-1, out_dtype=deq_dtype)
                r = R.quantize(d, R.const(s2, "float32"), R.const(z2, "int8"), axis=-1, out_dtype=out_dtype)
                R.output(r)
            return r

    return Module


def test_round_trip_folds_to_q():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "int8"):
            with R.dataflow():
                q = R.quantize(x, R.const(0.05, "float32"), R.const(3, "int8"), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    tvm.ir.assert_structural_equal(fold_qdq_round_trip()(round_trip()), Expected)


def test_per_channel_round_trip_folds_through_reshaped_constants():
    s = np.array([0.01, 0.02, 0.03], "float32")
    z = np.array([0, -5, 7], "int8")

    @I.ir_module
    class Before:
        @R.function
        def main(q: R.Tensor((1, 3, 2), "int8")) -> R.Tensor((1, 3, 2), "int8"):
            with R.dataflow():
                s1 = R.reshape(R.const(s.reshape(3, 1), "float32"), R.shape([3]))
                z1 = R.reshape(R.const(z.reshape(3, 1), "int8"), R.shape([3]))
                d = R.dequantize(q, s1, z1, axis=1, out_dtype="float32")
                r = R.quantize(d, R.const(s, "float32"), R.const(z, "int8"), axis=-2, out_dtype="int8")
                R.output(r)
            return r

    @I.ir_module
    class Expected:
        @R.function
        def main(q: R.Tensor((1, 3, 2), "int8")) -> R.Tensor((1, 3, 2), "int8"):
            return q

    tvm.ir.assert_structural_equal(fold_qdq_round_trip()(Before), Expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(s2=0.025),  # different scale
        dict(z2=4),  # different zero point
        dict(s1=0.0, s2=0.0),  # zero scale: 0 / 0 is NaN
        dict(s1=1e-40, s2=1e-40),  # subnormal scale: n * s loses bits
        dict(s1=np.inf, s2=np.inf),  # inf * 0 is NaN
        dict(s1=3e36, s2=3e36),  # n * s overflows
        dict(deq_dtype="float16"),  # rounded to half precision in between
        dict(out_dtype="uint8"),  # another integer type than q's
    ],
    ids=["scale", "zero-point", "zero", "subnormal", "inf", "overflow", "float16", "uint8"],
)
def test_round_trip_that_is_not_exact_is_left_unchanged(kwargs):
    before = round_trip(**kwargs)
    tvm.ir.assert_structural_equal(fold_qdq_round_trip()(before), before)


def test_per_channel_axes_must_match():
    s = np.array([0.01, 0.02], "float32")

    @I.ir_module
    class Before:
        @R.function
        def main(q: R.Tensor((2, 2), "int8")) -> R.Tensor((2, 2), "int8"):
            with R.dataflow():
                d = R.dequantize(q, R.const(s, "float32"), R.const(0, "int8"), axis=0, out_dtype="float32")
                r = R.quantize(d, R.const(s, "float32"), R.const(0, "int8"), axis=1, out_dtype="int8")
                R.output(r)
            return r

    tvm.ir.assert_structural_equal(fold_qdq_round_trip()(Before), Before)


def test_registry_is_ordered_and_named():
    names = [p.name for p in GRAPHOPT_RELAX_PASSES]
    assert names == ["fold-qdq-round-trip", "qdq-to-integer"] and len(set(names)) == len(names)
    passes = graphopt_relax_passes("x86")
    assert [p.info.name for p in passes] == [FOLD, "graphopt.QDQToInteger"]


# --- through graphopt's build -----------------------------------------------------------


def qdq_graph() -> Graph:
    """quantize -> dequantize -> quantize (folds), per tensor and per channel, and a
    requantize to another scale (does not fold), each dequantized to a float output."""
    g = Graph("qdq_round_trip")
    x = g.add_input("x", TensorType((2, 3, 4, 4)))
    s, z = g.add_param("s", np.array(0.02, "float32")), g.add_param("z", np.array(5, "int8"))
    sc = g.add_param("sc", np.array([0.01, 0.02, 0.04], "float32").reshape(3, 1, 1))
    zc = g.add_param("zc", np.array([0, -3, 9], "int8").reshape(3, 1, 1))
    s2 = g.add_param("s2", np.array(0.03, "float32"))
    outs = []
    for scale, zero, kw in [(s, z, {}), (sc, zc, dict(axis=1))]:
        q = g.add_node("quantize", [x, scale, zero], attrs=kw).output
        d = g.add_node("dequantize", [q, scale, zero], attrs=kw).output
        q = g.add_node("quantize", [d, scale, zero], attrs=kw).output
        outs.append(q)
        outs.append(g.add_node("dequantize", [q, scale, zero], attrs=kw).output)
    d = g.add_node("dequantize", [outs[0], s, z]).output
    outs.append(g.add_node("quantize", [d, s2, z]).output)
    g.set_outputs(outs)
    return g


def test_compiled_graph_matches_reference_exactly():
    g = qdq_graph()
    g.verify()
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, size=(2, 3, 4, 4)).astype("float32")
    x[0, 0, 0, :3] = [0.01, -0.03, 0.05]  # ties and near-ties of the 0.02 step
    folded = fold_qdq_round_trip()(lower_to_relax(g)).script()
    assert folded.count("R.quantize(") == 3  # of 5: the two round trips folded
    got = compile_graph(g, "x86")(x)
    want = g.run([x])
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@tvm.ir.instrument.pass_instrument
class _Count:
    """Which passes ran, in order (the real instrument hooks of a PassContext)."""

    def __init__(self):
        self.names: list[str] = []

    def run_before_pass(self, _mod, info):
        self.names.append(info.name)


def _count_runs(fn) -> list[str]:
    count = _Count()
    with tvm.transform.PassContext(instruments=[count]):
        fn()
    return count.names


def test_build_runs_the_passes_once_before_legalisation():
    mod = lower_to_relax(qdq_graph())
    names = _count_runs(lambda: build(mod, "x86"))
    assert names.count(FOLD) == 1
    assert names.index(FOLD) < names.index("LegalizeOps")


def test_tuning_runs_the_passes_once_before_legalisation(tmp_path):
    mod = lower_to_relax(qdq_graph())
    names = _count_runs(lambda: tune(mod, "x86", tmp_path, 0, progress=None))
    assert names.count(FOLD) == 1
    assert names.index(FOLD) < names.index("LegalizeOps")
