"""The IR's rules: parameters change only through verbs, `data` is the effective tensor,
the verifier judges change by content, types re-infer after an edit, and bad input to a
verb is refused by name with nothing changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import torch

from graphopt.analysis.params import count_params
from graphopt.errors import GraphError, PassError, VerificationError
from graphopt.ir.encodings import Codebook
from graphopt.ir.graph import Graph, Parameter
from graphopt.ir.types import TensorType
from graphopt.passes import Pass, PassContext, PassResult, Pipeline, default_instruments, register_pass
from graphopt.passes.registry import unregister_pass


def mlp(hidden: int = 6) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input("x", TensorType((2, 4)))
    w1 = g.add_param("fc1.weight", rng.standard_normal((hidden, 4)).astype(np.float32))
    b1 = g.add_param("fc1.bias", rng.standard_normal(hidden).astype(np.float32))
    w2 = g.add_param("fc2.weight", rng.standard_normal((3, hidden)).astype(np.float32))
    h = g.add_node("relu", [g.add_node("linear", [x, w1, b1], name="fc1").output], name="act").output
    g.set_outputs([g.add_node("linear", [h, w2], name="fc2").output])
    return g


X = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)


# ---- parameters cannot change behind the verifier ------------------------------------------------


@dataclass(frozen=True)
class ZeroSmallInPlace(Pass):
    """Declared exact; zeroes small weights in place (the bug this rule exists for)."""

    name: ClassVar[str] = "test-zero-small-in-place"

    def run(self, graph, ctx):
        w = graph.param("fc1.weight").data
        w[np.abs(w) < 0.5] = 0
        return PassResult(graph, False)


@dataclass(frozen=True)
class ZeroSmallBehindVerbs(Pass):
    """The same edit forced past the read-only arrays, through private state."""

    name: ClassVar[str] = "test-zero-small-behind-verbs"

    def run(self, graph, ctx):
        w = graph.param("fc1.weight").data
        graph._params["fc1.weight"] = Parameter(np.where(np.abs(w) < 0.5, 0, w))
        return PassResult(graph, True)


@pytest.fixture(autouse=True)
def throwaway_passes():
    for cls in (ZeroSmallInPlace, ZeroSmallBehindVerbs):
        register_pass(cls)
    yield
    for cls in (ZeroSmallInPlace, ZeroSmallBehindVerbs):
        unregister_pass(cls.name)


def test_in_place_weight_edit_is_refused_naming_the_pass():
    g = mlp()
    with pytest.raises(
        PassError,
        match=r"pass 'test-zero-small-in-place' crashed with ValueError: "
        r"assignment destination is read-only \(parameters .* verbs",
    ):
        Pipeline.parse("test-zero-small-in-place").run(g, PassContext(instruments=default_instruments()))
    np.testing.assert_array_equal(g.run([X])[0], mlp().run([X])[0])


def test_edit_behind_the_verbs_is_caught_naming_the_pass():
    with pytest.raises(
        PassError,
        match=r"pass 'test-zero-small-behind-verbs' edited the graph behind its "
        r"verbs \(parameter 'fc1.weight' changed",
    ):
        Pipeline.parse("test-zero-small-behind-verbs").run(mlp(), PassContext(instruments=default_instruments()))


def test_handed_out_arrays_cannot_be_made_writeable():
    g = mlp()
    w = g.param("fc1.weight").data
    with pytest.raises(ValueError):
        w.setflags(write=True)
    with pytest.raises(TypeError, match="set_attrs"):
        g.node("fc1").attrs["x"] = 1


def test_every_parameter_verb_bumps_the_version():
    g = mlp()
    for edit in (
        lambda: g.set_param("fc1.bias", np.zeros(6, np.float32)),
        lambda: g.set_mask("fc2.weight", np.ones((3, 6), bool)),
        lambda: g.set_encoding("fc2.weight", None),
        lambda: g.set_trainable("fc1.bias", False),
        lambda: g.slice_param("fc1.bias", 0, range(6)),
    ):
        before = g.version
        edit()
        assert g.version > before


def test_user_arrays_are_copied_in():
    w = np.ones((3, 6), np.float32)
    g = mlp()
    g.set_param("fc2.weight", w)
    w[:] = 7
    assert g.param("fc2.weight").data.max() == 1


# ---- one meaning for masks and encodings -----------------------------------------------------------


def test_mask_zeroes_data_and_survives_slicing():
    g = mlp()
    mask = np.ones((6, 4), bool)
    mask[::2, 1] = False
    g.set_mask("fc1.weight", mask)
    p = g.param("fc1.weight")
    assert np.all(p.data[~mask] == 0) and p.sparsity == pytest.approx(3 / 24)
    g.slice_param("fc1.weight", 0, [0, 1, 2])
    np.testing.assert_array_equal(g.param("fc1.weight").mask, mask[:3])
    g.set_param("fc1.weight", np.full((3, 4), 5, np.float32))  # the mask is kept and applied
    assert np.all(g.param("fc1.weight").data[~mask[:3]] == 0)
    g.verify(check_types=False)


def test_mask_changes_run_onnx_and_tvm_identically():
    g = mlp()
    dense = g.run([X])[0]
    mask = np.zeros((6, 4), bool)
    mask[:, :2] = True
    g.set_mask("fc1.weight", mask)
    want = g.run([X])[0]
    assert not np.allclose(want, dense)
    w = np.where(mask, mlp().param("fc1.weight").data, 0)
    ref = np.maximum(X @ w.T + mlp().param("fc1.bias").data, 0) @ mlp().param("fc2.weight").data.T
    np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-5)
    session = ort.InferenceSession(g.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": X})[0], want, rtol=1e-5, atol=1e-5)
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    np.testing.assert_allclose(compile_graph(g, "x86")(X), want, rtol=1e-5, atol=1e-5)


def test_encoding_decodes_to_data_and_is_sliced_with_it():
    g = mlp()
    book = Codebook(np.array([-1.0, 0.0, 0.5, 2.0], np.float32), np.arange(18).reshape(3, 6) % 4)
    g.set_encoding("fc2.weight", book)
    np.testing.assert_array_equal(g.param("fc2.weight").data, book.decode())
    assert g.slice_param("fc2.weight", 1, [0, 2, 4]) is True
    sliced = g.param("fc2.weight")
    np.testing.assert_array_equal(sliced.encoding.decode(), sliced.data)
    g.set_param("fc2.weight", sliced.data * 2)  # new data: the old encoding no longer describes it
    assert g.param("fc2.weight").encoding is None


def test_unsliceable_encoding_is_dropped_and_reported():
    @dataclass(frozen=True)
    class Opaque:
        array: np.ndarray

        def decode(self):
            return self.array

        @property
        def nbytes(self):
            return 1

        def describe(self):
            return "opaque"

    g = mlp()
    g.set_encoding("fc1.bias", Opaque(g.param("fc1.bias").data.copy()))
    assert g.slice_param("fc1.bias", 0, [1, 2]) is False
    assert g.param("fc1.bias").encoding is None


def test_verifier_checks_both_invariants():
    g = mlp()
    w = g.param("fc1.weight").data
    g._params["fc1.weight"] = Parameter(w, mask=np.zeros(w.shape, bool))  # nonzero where pruned
    with pytest.raises(VerificationError, match="nonzero entries where its mask prunes"):
        g.verify()
    g = mlp()
    book = Codebook(np.array([1.0, 2.0], np.float32), np.zeros((3, 6), np.int64))
    g._params["fc2.weight"] = Parameter(g.param("fc2.weight").data, encoding=book)
    with pytest.raises(VerificationError, match="does not decode exactly"):
        g.verify()


# ---- bad input: named, nothing changed ------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda g: g.set_mask("fc1.weight", np.ones((4, 6), bool)),
            r"'fc1.weight': a mask must be bool of shape \(6, 4\)",
        ),
        (lambda g: g.set_mask("fc1.weight", np.ones((6, 4), np.int8)), r"'fc1.weight': a mask must be bool"),
        (
            lambda g: g.set_param("fc1.weight", np.ones((6, 4), np.complex64)),
            r"parameter 'fc1.weight': unsupported numpy dtype complex64",
        ),
        (lambda g: g.set_param("fc1.weight", np.array([object()])), r"parameter 'fc1.weight': object arrays"),
        (
            lambda g: g.set_encoding("fc2.weight", Codebook(np.ones(2, np.float32), np.zeros((6, 3), np.int64))),
            r"parameter 'fc2.weight': encoding codebook.* decodes to f32\[6,3\]",
        ),
        (lambda g: g.set_encoding("fc2.weight", "not an encoding"), r"'fc2.weight': str is not an Encoding"),
        (lambda g: g.slice_param("fc1.weight", 2, [0]), r"parameter 'fc1.weight' has 2 dims; cannot slice axis 2"),
        (
            lambda g: g.slice_param("fc1.weight", 0, [6]),
            r"parameter 'fc1.weight': indices to keep must lie in \[0, 6\)",
        ),
        (lambda g: g.set_param("nope", np.ones(2)), r"'nope' is not a parameter"),
    ],
)
def test_bad_verb_input_is_named_and_changes_nothing(edit, message):
    g = mlp()
    g.set_mask("fc1.weight", np.ones((6, 4), bool))
    before, version = str(g), g.version
    with pytest.raises(GraphError, match=message):
        edit(g)
    assert str(g) == before and g.version == version


def test_mask_of_another_shape_must_be_restated():
    g = mlp()
    g.set_mask("fc1.weight", np.ones((6, 4), bool))
    with pytest.raises(GraphError, match=r"'fc1.weight': new data \(3, 4\) does not fit its mask"):
        g.set_param("fc1.weight", np.ones((3, 4), np.float32))
    g.set_param("fc1.weight", np.ones((3, 4), np.float32), mask=None)
    assert g.param("fc1.weight").mask is None


# ---- types re-infer after an edit ------------------------------------------------------------------


def test_types_reinfer_after_slicing_a_channel_group():
    g = mlp()
    keep = [0, 2, 5]
    g.slice_param("fc1.weight", 0, keep)
    g.slice_param("fc1.bias", 0, keep)
    g.slice_param("fc2.weight", 1, keep)
    with pytest.raises(VerificationError):
        g.verify()  # downstream types are stale until re-inferred
    assert g.infer_types(from_values=["fc1.weight", "fc1.bias"]) == 2  # fc1 and act
    assert g.type_of("act") == TensorType((2, 3)) and g.type_of("fc2") == TensorType((2, 3))
    g.verify()
    full = mlp()
    w1, b1, w2 = (full.param(n).data for n in ("fc1.weight", "fc1.bias", "fc2.weight"))
    ref = np.maximum(X @ w1[keep].T + b1[keep], 0) @ w2[:, keep].T
    np.testing.assert_allclose(g.run([X])[0], ref, rtol=1e-5, atol=1e-5)


def test_infer_types_names_the_node_that_rejects_its_inputs():
    g = mlp()
    g.slice_param("fc1.weight", 0, [0, 1])  # bias still has 6 entries
    with pytest.raises(VerificationError, match="node 'fc1'"):
        g.infer_types()


# ---- quantization vocabulary -----------------------------------------------------------------------


def test_int4_and_float8_parameters_and_their_bytes():
    g = Graph("q")
    x = g.add_input("x", TensorType((2, 8)))
    q = g.add_param("w.q", np.arange(-8, 8).reshape(2, 8).astype(ml_dtypes.int4))
    s = g.add_param("w.s", np.array([0.5, 0.25], np.float32))
    z = g.add_param("w.z", np.zeros(2, ml_dtypes.int4))
    f8 = g.add_param("f8", np.array([1.5, -2.0], ml_dtypes.float8_e4m3fn))
    w = g.add_node("dequantize", [q, s, z], attrs={"axis": 0}).output
    g.set_outputs([g.add_node("linear", [x, w]).output, g.add_node("cast", [f8], attrs={"dtype": "float32"}).output])
    g.verify()
    assert str(g.value(q).type) == "i4[2,8]" and str(g.value(f8).type) == "f8e4m3[2]"
    counts = {p.name: p for p in count_params(g).params}
    assert (counts["w.q"].elements, counts["w.q"].nbytes, counts["w.q"].bits) == (16, 8, 4.0)
    assert counts["f8"].nbytes == 2 and count_params(g).nbytes == 8 + 8 + 1 + 2
    out, cast = g.run([np.ones((2, 8), np.float32)])
    np.testing.assert_array_equal(cast, [1.5, -2.0])
    np.testing.assert_allclose(out[0], [np.arange(-8, 0).sum() * 0.5, np.arange(0, 8).sum() * 0.25])


def test_codebook_bytes_count_indices_at_their_width():
    g = mlp()
    g.set_encoding("fc2.weight", Codebook(np.array([0.0, 1.0, 2.0, 3.0], np.float32), np.zeros((3, 6), np.int64)))
    c = {p.name: p for p in count_params(g).params}["fc2.weight"]
    assert c.elements == 18 and c.nbytes == 16 + 5 and "codebook(k=4, 2-bit" in c.encoding


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"dtype": "int8"}, [-128, -3, 0, 2, 127]),
        ({"dtype": "int8", "qmin": -127, "qmax": 127}, [-127, -3, 0, 2, 127]),
        ({"dtype": "int4"}, [-8, -3, 0, 2, 7]),
        ({"dtype": "uint4"}, [0, 0, 0, 2, 15]),
    ],
)
def test_quantize_ranges(attrs, expected):
    g = Graph("q")
    x = g.add_input("x", TensorType((5,)))
    s, z = (
        g.add_param("s", np.float32(1.0)),
        g.add_param("z", np.zeros((), np.int8 if attrs["dtype"] != "uint4" else np.uint8)),
    )
    node = g.add_node("quantize", [x, s, z], attrs=attrs)
    g.set_outputs([node.output])
    assert g.type_of(node.output).dtype == attrs["dtype"]
    np.testing.assert_array_equal(g.run([np.array([-500, -3.2, 0.4, 2.0, 500], np.float32)])[0], expected)


def test_blocked_quantize_dequantize_round_trip_on_torch_onnx_and_tvm():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 10)).astype(np.float32)
    scale = np.stack([np.abs(w[:, i : i + 4]).max(1) / 7 for i in range(0, 10, 4)], axis=1).astype(np.float32)  # [4, 3]
    g = Graph("blocked")
    x = g.add_input("x", TensorType((4, 10)))
    s, z = g.add_param("s", scale), g.add_param("z", np.zeros((4, 3), np.int8))
    q = g.add_node("quantize", [x, s, z], attrs={"axis": 1, "block_size": 4, "dtype": "int4"})
    y = g.add_node("dequantize", [q.output, s, z], attrs={"axis": 1, "block_size": 4})
    g.set_outputs([y.output])
    out = g.run([w])[0]
    s_full = np.repeat(scale, 4, axis=1)[:, :10]
    np.testing.assert_allclose(out, np.clip(np.round(w / s_full), -8, 7) * s_full, rtol=1e-6)
    assert np.abs(out - w).max() <= s_full.max() / 2 + 1e-6
    session = ort.InferenceSession(g.to_onnx(opset=21).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": w})[0], out, rtol=1e-6)
    with pytest.raises(Exception, match="needs opset >= 21"):
        g.to_onnx(opset=17)
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    np.testing.assert_allclose(compile_graph(g, "x86")(w), out, rtol=1e-6)


# ---- emission hooks: op overrides and captured values --------------------------------------------


def test_to_torch_impls_override_an_op_for_training():
    g = Graph("ste")
    x = g.add_input("x", TensorType((4,)))
    s, z = g.add_param("s", np.float32(0.5)), g.add_param("z", np.zeros((), np.int8))
    q = g.add_node("quantize", [x, s, z]).output
    g.set_outputs([g.add_node("dequantize", [q, s, z]).output])

    def ste_quantize(x, scale, zero_point, **attrs):  # straight-through: round in forward, identity grad
        q = torch.clamp(x / scale + zero_point, -128, 127)
        return q + (torch.round(q) - q).detach()

    module = g.to_torch(impls={"quantize": ste_quantize})
    inp = torch.tensor([0.1, 0.9, -1.3, 2.2], requires_grad=True)
    module(inp).sum().backward()
    torch.testing.assert_close(inp.grad, torch.ones(4))
    with pytest.raises(KeyError, match="unknown op 'nonsense'"):
        g.to_torch(impls={"nonsense": ste_quantize})


def test_run_captures_intermediate_values():
    g = mlp()
    outputs, seen = g.run([X], capture=["fc1", "act"])
    np.testing.assert_array_equal(outputs[0], g.run([X])[0])
    np.testing.assert_array_equal(seen["act"], np.maximum(seen["fc1"], 0))
    with pytest.raises(GraphError, match="no value named 'ghost'"):
        g.run([X], capture=["ghost"])


def test_calibration_data_is_kept_apart_from_verifier_inputs():
    ctx = PassContext(inputs=[[X]], calibration=[[X * 2], [X * 3]])
    assert len(ctx.inputs) == 1 and len(list(ctx.calibration_sets())) == 2
    assert len(list(PassContext().calibration_sets(mlp(), count=3))) == 3


def test_copy_shares_immutable_parameters_and_is_independent():
    g = mlp()
    c = g.copy()
    assert c.param("fc1.weight") is g.param("fc1.weight")
    c.set_param("fc1.weight", np.zeros((6, 4), np.float32))
    assert g.param("fc1.weight").data.any()
