"""squeeze / unsqueeze / reshape(0, -1) / expand(-1) name axes, not sizes: a channel count
changed upstream (structured pruning) leaves them valid without rewriting them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphopt.errors import VerificationError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType

RNG = np.random.default_rng(0)


def conv_then_shape_ops(flat_shape, squeeze_form) -> Graph:
    """x -> conv(8 channels) -> reshape(flat_shape) and -> mean -> squeeze_form -> unsqueeze -> expand."""
    g = Graph("shape_ops")
    x = g.add_input("x", TensorType((2, 4, 3, 3)))
    w = g.add_param("w", RNG.standard_normal((8, 4, 1, 1)).astype(np.float32))
    b = g.add_param("b", RNG.standard_normal(8).astype(np.float32))
    y = g.add_node("conv", [x, w, b], attrs=dict(stride=[1, 1], pads=[0, 0, 0, 0], dilation=[1, 1]), name="conv").output
    flat = g.add_node("reshape", [y], attrs={"shape": flat_shape}, name="flat").output
    m = g.add_node("mean", [y], attrs={"dims": [2, 3], "keepdim": True}, name="mean").output
    s = g.add_node(squeeze_form[0], [m], attrs=squeeze_form[1], name="sq").output
    u = g.add_node("unsqueeze", [s], attrs={"axes": [1]}, name="unsq").output
    e = g.add_node("expand", [u], attrs={"shape": [-1, 3, -1]}, name="bcast").output
    g.set_outputs([flat, e])
    g.verify()
    return g


def prune_conv(g: Graph, keep) -> None:
    for p in ("w", "b"):
        g.slice_param(p, 0, keep)
    g.infer_types(from_values=["w", "b"])


def test_axis_based_ops_survive_a_channel_change():
    g = conv_then_shape_ops([0, -1], ("squeeze", {"axes": [2, 3]}))
    w, b = torch.from_numpy(np.array(g.params["w"].data)), torch.from_numpy(np.array(g.params["b"].data))
    keep = [0, 1, 4, 6, 7]
    prune_conv(g, keep)
    g.verify()
    assert g.type_of("flat").shape == (2, 45) and g.type_of("bcast").shape == (2, 3, 5)
    x = torch.randn(2, 4, 3, 3)
    y = F.conv2d(x, w[keep], b[keep])
    flat, bcast = g.run([x.numpy()])
    np.testing.assert_allclose(flat, y.reshape(2, -1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bcast, y.mean((2, 3))[:, None].expand(-1, 3, -1).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "flat_shape,squeeze_form,culprit",
    [
        ([2, 72], ("squeeze", {"axes": [2, 3]}), "flat"),  # sizes fixed at import
        ([0, -1], ("reshape", {"shape": [2, 8]}), "sq"),  # squeeze written as a fixed reshape
    ],
)
def test_size_based_forms_break_on_the_same_change(flat_shape, squeeze_form, culprit):
    g = conv_then_shape_ops(flat_shape, squeeze_form)
    with pytest.raises(VerificationError, match=culprit):
        prune_conv(g, [0, 1, 4, 6, 7])


@pytest.mark.parametrize(
    "op,shape,axes,want",
    [
        ("squeeze", (2, 1, 3, 1), [-1, 1], (2, 3)),
        ("squeeze", (2, 3), [], (2, 3)),
        ("unsqueeze", (2, 3), [0, -1], (1, 2, 3, 1)),
        ("unsqueeze", (2, 3), [3, 1], (2, 1, 3, 1)),
    ],
)
def test_axes_semantics(op, shape, axes, want):
    g = Graph(op)
    x = g.add_input("x", TensorType(shape))
    g.set_outputs([g.add_node(op, [x], attrs={"axes": axes}).output])
    g.verify()
    assert g.type_of(g.outputs[0]).shape == want


@pytest.mark.parametrize(
    "op,axes,message",
    [
        ("squeeze", [0], "must be 1"),  # ONNX semantics: torch would skip it silently
        ("squeeze", [3], "out of range"),
        ("squeeze", [1, -2], "twice"),
        ("unsqueeze", [4], "out of range"),
    ],
)
def test_bad_axes_name_the_node(op, axes, message):
    g = Graph(op)
    x = g.add_input("x", TensorType((2, 1, 3)))
    with pytest.raises(VerificationError, match=message):
        g.add_node(op, [x], attrs={"axes": axes}, name="bad")


def test_linear_unsqueeze_squeeze_reshape_follow_pruned_out_channels():
    g = Graph("linear_shape_ops")
    x = g.add_input("x", TensorType((2, 3, 4)))
    w = g.add_param("w", RNG.standard_normal((6, 4)).astype(np.float32))
    y = g.add_node("linear", [x, w], name="fc").output
    u = g.add_node("unsqueeze", [y], attrs={"axes": [-1]}, name="unsq").output
    s = g.add_node("squeeze", [u], attrs={"axes": [3]}, name="sq").output
    g.set_outputs([g.add_node("reshape", [s], attrs={"shape": [0, -1]}, name="flat").output])
    g.verify()
    weight = torch.from_numpy(np.array(g.params["w"].data))
    keep = [1, 2, 5]
    g.slice_param("w", 0, keep)
    g.infer_types(from_values=["w"])
    g.verify()
    assert [g.type_of(v).shape for v in ("fc", "unsq", "sq", "flat")] == [(2, 3, 3), (2, 3, 3, 1), (2, 3, 3), (2, 9)]
    assert [dict(g.node(n).attrs) for n in ("unsq", "sq", "flat")] == [
        {"axes": [-1]},
        {"axes": [3]},
        {"shape": [0, -1]},
    ]  # no attribute rewritten
    xs = torch.randn(2, 3, 4)
    (got,) = g.run([xs.numpy()])
    np.testing.assert_allclose(got, F.linear(xs, weight[keep]).reshape(2, -1).numpy(), rtol=1e-5, atol=1e-5)
