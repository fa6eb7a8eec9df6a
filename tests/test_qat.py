"""QAT from a Q/DQ graph: STE rounding, float shadows, learned scales, integers written back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt.errors import TrainError
from graphopt.ir.types import to_torch_tensor
from graphopt.models.digits import DigitsMLP, load_digits_data, train_digits_model
from graphopt.passes import PassContext, Pipeline
from graphopt.train import evaluate
from graphopt.train.qat import float_shadow, qat, ste_quantize

W4A8 = "fold-bn,quantize{weights=per-tensor},quantize-weights{bits=4 scales=per-tensor requantize=true}"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = load_digits_data(seed=0, test_size=0.3)
    model = DigitsMLP(hidden=(64,))
    train_digits_model(model, epochs=4, data=data)
    x_train = data.x_train.flatten(1)
    graph = graphopt.trace(model, (x_train[:64],))
    calib = [[x_train[i : i + 64].numpy()] for i in range(0, 256, 64)]
    ptq = Pipeline.parse(W4A8).run(graph, PassContext(calibration=calib)).graph
    batches = [(x_train[i : i + 64], data.y_train[i : i + 64]) for i in range(0, len(x_train) - 63, 64)]
    return graph, ptq, batches, [(data.x_test.flatten(1), data.y_test)]


def test_ste_rounds_forward_and_passes_gradients_inside_the_range():
    x = torch.tensor([-2.0, -0.26, 0.24, 0.5, 3.0], requires_grad=True)
    scale, zero = torch.tensor(0.5), torch.tensor(0, dtype=torch.int8)
    q = ste_quantize(x, scale, zero, axis=None, dtype="int4", qmin=-3, qmax=3, block_size=None)
    assert q.tolist() == [-3.0, -1.0, 0.0, 1.0, 3.0]  # round half to even, clamped to [qmin, qmax]
    q.sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]  # 1 / scale inside, 0 where clamped


def test_qat_improves_the_ptq_graph_and_writes_back_exact_integers(setup):
    graph, ptq, batches, test = setup
    text = str(ptq)
    result = qat(ptq, batches, torch.nn.CrossEntropyLoss(), epochs=3, optimizer="adam", lr=1e-3, log=None)
    assert str(ptq) == text  # the PTQ graph is untouched
    out = result.graph
    out.verify()
    assert out.op_counts() == ptq.op_counts()
    assert {k: p.data.dtype for k, p in out.params.items()} == {k: p.data.dtype for k, p in ptq.params.items()}
    assert result.train.epoch_losses[-1] < result.train.epoch_losses[0]
    # the written integers are what the fake quantization computed in training
    tg = result.train.graph
    for sh in (s for s in result.shadows if s.kind == "weight"):
        fq = tg.producer(tg.node(sh.dequantize).inputs[0])
        scale, zero, shadow = (to_torch_tensor(tg.param(v).data) for v in (*fq.inputs[1:], sh.shadow))
        expect = ste_quantize(shadow, scale, zero, **dict(fq.attrs)).numpy()
        np.testing.assert_array_equal(out.param(sh.q).data.astype(np.float32), expect)
    # and the graph computes what was trained, up to the int32 bias grid (s_x * s_w)
    x = test[0][0][:32]
    trained = tg.to_torch(impls={"quantize": ste_quantize}).eval()
    np.testing.assert_allclose(out.run([x.numpy()])[0], trained(x).detach().numpy(), rtol=0, atol=0.05)
    changed = [s.q for s in result.shadows if s.kind == "weight" and np.any(out.param(s.q).data != ptq.param(s.q).data)]
    assert changed  # integers moved
    assert evaluate(out, test) >= evaluate(ptq, test)


def test_learned_scales_stay_positive_and_keep_the_bias_grid(setup):
    _, ptq, batches, _ = setup
    result = qat(ptq, batches[:6], torch.nn.CrossEntropyLoss(), learn_scales=True, optimizer="adam", lr=1e-3, log=None)
    out = result.graph
    assert result.scales and all(np.all(out.param(s).data > 0) for s in result.scales)
    assert any(not np.array_equal(out.param(s).data, ptq.param(s).data) for s in result.scales)
    for node in (n for n in out.nodes if n.op == "linear"):
        x_dq, w_dq, b_dq = (out.producer(v) for v in node.inputs)
        product = out.param(x_dq.inputs[1]).data * out.param(w_dq.inputs[1]).data
        np.testing.assert_allclose(out.param(b_dq.inputs[1]).data, np.broadcast_to(product, (node_out(out, node),)))


def node_out(graph, node) -> int:
    return graph.type_of(node.output).shape[-1]


def test_training_graph_and_bad_input(setup):
    graph, ptq, batches, _ = setup
    work, shadows, scales = float_shadow(ptq)
    assert not scales and {s.kind for s in shadows} == {"weight", "bias"}
    assert work.op_counts()["quantize"] == ptq.op_counts()["quantize"] + sum(s.kind == "weight" for s in shadows)
    with pytest.raises(TrainError, match="has no quantized weight"):
        qat(graph, batches, torch.nn.CrossEntropyLoss(), log=None)
    with pytest.raises(TrainError, match="impls is set by qat itself"):
        qat(ptq, batches, torch.nn.CrossEntropyLoss(), impls={}, log=None)
