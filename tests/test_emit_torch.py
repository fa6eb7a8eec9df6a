"""torch emitter: module structure, copying, outputs, opaque nodes, training and write_back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import fx, nn

from graphopt.emit.torch import emit_torch, write_back
from graphopt.errors import EmitError
from graphopt.frontends.fx import trace
from graphopt.ir.graph import Graph
from graphopt.ir.ops import OPAQUE, ValueRef
from graphopt.ir.types import TensorType


def small_graph() -> Graph:
    """x -> linear(fc.weight, fc.bias) -> relu -> split -> (a * @scale, b); int buffer unused."""
    rng = np.random.default_rng(0)
    g = Graph("small")
    x = g.add_input("x", TensorType((3, 4)))
    w = g.add_param("fc.weight", rng.standard_normal((6, 4)).astype(np.float32))
    b = g.add_param("fc.bias", rng.standard_normal(6).astype(np.float32))
    s = g.add_param("scale", np.float32(2.0), trainable=False)
    g.add_param("steps", np.int64(7))
    h = g.add_node("relu", [g.add_node("linear", [x, w, b]).output]).output
    a, rest = g.add_node("split", [h], attrs={"axis": 1, "sizes": [2, 4]}).outputs
    g.set_outputs([g.add_node("mul", [a, s]).output, rest])
    return g


def test_structure_and_outputs():
    g = small_graph()
    g.verify()
    m = emit_torch(g)
    assert isinstance(m, fx.GraphModule)
    assert m.param_names == {"fc.weight": "fc_weight", "fc.bias": "fc_bias", "scale": "scale", "steps": "steps"}
    params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
    assert set(params) == {"fc_weight", "fc_bias"} and all(p.requires_grad for p in params.values())
    assert set(buffers) == {"scale"}  # frozen: a buffer; unused 'steps' is not fetched
    x = torch.randn(3, 4)
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 2
    h = torch.relu(x @ torch.tensor(g.params["fc.weight"].data).T + torch.tensor(g.params["fc.bias"].data))
    torch.testing.assert_close(out[0], h[:, :2] * 2)
    torch.testing.assert_close(out[1], h[:, 2:])
    np.testing.assert_allclose(g.run([x.numpy()])[1], h[:, 2:].numpy(), rtol=1e-6)


def test_single_output_is_a_tensor_and_inputs_params_can_be_outputs():
    g = Graph("passthrough")
    x = g.add_input("input.1", TensorType((2,)))
    c = g.add_param("0.const", np.arange(2, dtype=np.float32))
    g.set_outputs([g.add_node("add", [x, c]).output])
    m = emit_torch(g)
    assert m.input_names == {"input.1": "input_1"} and m.param_names == {"0.const": "p_0_const"}
    assert isinstance(m(torch.ones(2)), torch.Tensor)
    g.set_outputs([x, c, g.outputs[0]])
    x_out, c_out, s_out = emit_torch(g)(torch.ones(2))
    assert torch.equal(x_out, torch.ones(2)) and torch.equal(c_out, torch.arange(2.0))


def test_parameters_are_copies():
    g = small_graph()
    m = emit_torch(g)
    with torch.no_grad():
        m.fc_weight.add_(1.0)
    assert not np.allclose(g.params["fc.weight"].data, m.fc_weight.detach().numpy())
    g.set_param("fc.bias", np.zeros_like(g.params["fc.bias"].data))
    assert m.fc_bias.abs().sum() > 0


def test_name_collisions_get_suffixes():
    g = Graph("collide")
    x = g.add_input("x", TensorType((2,)))
    p1 = g.add_param("a.b", np.ones(2, np.float32))
    p2 = g.add_param("a_b", np.full(2, 2, np.float32))
    p3 = g.add_param("training", np.full(2, 3, np.float32))
    y = g.add_node("add", [g.add_node("add", [x, p1]).output, p2]).output
    g.set_outputs([g.add_node("mul", [y, p3]).output])
    m = emit_torch(g)
    assert len(set(m.param_names.values())) == 3 and m.param_names["training"] != "training"
    torch.testing.assert_close(m(torch.zeros(2)), torch.full((2,), 9.0))


def test_opaque_torch_node_calls_its_op():
    g = Graph("shuffle")
    x = g.add_input("x", TensorType((1, 8, 2, 2)))
    attrs = {"framework": "torch", "target": "aten.pixel_shuffle.default", "args": (ValueRef(0), 2), "kwargs": {}}
    node = g.add_node(OPAQUE, [x], attrs=attrs, output_types=[TensorType((1, 2, 4, 4))])
    g.set_outputs([node.output])
    g.verify()
    x = torch.randn(1, 8, 2, 2)
    torch.testing.assert_close(emit_torch(g)(x), torch.pixel_shuffle(x, 2))


def test_opaque_onnx_node_is_refused():
    g = Graph("nms")
    x = g.add_input("boxes", TensorType((1, 4, 4)))
    attrs = {"framework": "onnx", "op_type": "NonMaxSuppression", "domain": "", "onnx_attrs": {}}
    node = g.add_node(OPAQUE, [x], attrs=attrs, name="nms0", output_types=[TensorType((3, 3), "int64")])
    g.set_outputs([node.output])
    with pytest.raises(EmitError, match=r"nms0.*NonMaxSuppression.*cannot be emitted to torch"):
        emit_torch(g)


def test_unknown_torch_target_is_refused():
    g = Graph("bad")
    x = g.add_input("x", TensorType((2,)))
    attrs = {"framework": "torch", "target": "aten.no_such_op.default", "args": (ValueRef(0),), "kwargs": {}}
    g.set_outputs([g.add_node(OPAQUE, [x], attrs=attrs, name="mystery", output_types=[TensorType((2,))]).output])
    with pytest.raises(EmitError, match="mystery.*aten.no_such_op.default"):
        emit_torch(g)


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)


def test_emitted_module_trains_and_writes_back():
    torch.manual_seed(0)
    model = Regressor().eval()
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    graph = trace(model, (x,))
    mask = np.ones((16, 8), dtype=bool)
    mask[:, ::2] = False
    graph.set_mask("body.0.weight", mask)
    module = graph.to_torch()
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.mse_loss(module(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in module.named_parameters())
    assert torch.equal(module.body_1_running_mean, torch.tensor(graph.params["body.1.running_mean"].data))

    written = write_back(graph, module)
    assert set(written) == {n for n, p in graph.params.items() if p.trainable}
    assert "body.1.running_mean" not in written
    trained = module.body_0_weight.detach().numpy()
    assert np.any(trained[:, ::2] != 0)  # plain SGD moved the pruned entries ...
    np.testing.assert_array_equal(
        graph.params["body.0.weight"].data, np.where(mask, trained, 0)
    )  # ... write_back re-applies the mask
    assert graph.params["body.0.weight"].mask is not None and graph.params["body.0.weight"].trainable
    graph.verify()
    with torch.no_grad():
        module.body_0_weight.mul_(torch.from_numpy(mask))
        np.testing.assert_allclose(graph.run([x.numpy()])[0], module(x).numpy(), rtol=1e-6, atol=1e-6)


def test_write_back_needs_an_emitted_module():
    with pytest.raises(EmitError, match="emit_torch"):
        write_back(small_graph(), nn.Linear(2, 2))
