"""Tests for the bundled model zoo (graphopt.models)."""

from __future__ import annotations

import pytest
import torch

from graphopt.models import (
    DigitsCNN,
    DigitsMLP,
    get_model,
    list_models,
    load_digits_data,
    train_digits_model,
)

NAMES = ["resnet18", "mobilenet_v2", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]
NUM_OUTPUTS = {
    "resnet18": 1000,
    "mobilenet_v2": 1000,
    "vit_small": 10,
    "bert_small": 2,
    "digits_cnn": 10,
    "digits_mlp": 10,
}

# Every call_function target allowed in an exported graph (simple, analyzable ops only).
ALLOWED_OPS = {
    "aten.conv2d.default", "aten.linear.default", "aten.batch_norm.default", "aten.layer_norm.default",
    "aten.embedding.default", "aten.dropout.default", "aten.max_pool2d.default",
    "aten.adaptive_avg_pool2d.default", "aten.relu.default", "aten.hardtanh.default", "aten.gelu.default",
    "aten.tanh.default", "aten.add.Tensor", "aten.mul.Tensor", "aten.matmul.default", "aten.softmax.int",
    "aten.flatten.using_ints", "aten.reshape.default", "aten.view.default", "aten.permute.default",
    "aten.transpose.int", "aten.cat.default", "aten.expand.default", "aten.select.int", "aten.slice.Tensor",
}  # fmt: skip


@pytest.fixture(scope="module")
def exported():
    """Batch-1 model, inputs and exported program per name, built once."""
    cache = {}

    def get(name):
        if name not in cache:
            model, inputs = get_model(name, batch_size=1, seed=0)
            cache[name] = (model, inputs, torch.export.export(model, inputs))
        return cache[name]

    return get


def _ops(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_list_models():
    assert list_models() == NAMES


def test_unknown_model_raises_with_valid_names():
    with pytest.raises(KeyError) as exc:
        get_model("resnet50")
    assert "resnet50" in str(exc.value) and all(n in str(exc.value) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    model, inputs = get_model(name, batch_size=2)
    assert not model.training
    with torch.no_grad():
        out = model(*inputs)
    assert out.shape == (2, NUM_OUTPUTS[name])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_eager_and_uses_simple_ops(name, exported):
    model, inputs, ep = exported(name)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(*inputs), model(*inputs))
    assert _ops(ep) <= ALLOWED_OPS, _ops(ep) - ALLOWED_OPS


@pytest.mark.parametrize("name", ["vit_small", "bert_small"])
def test_attention_is_explicit(name, exported):
    ops = _ops(exported(name)[2])
    assert "aten.matmul.default" in ops and "aten.softmax.int" in ops
    assert not any("scaled_dot_product" in op or "multi_head_attention" in op for op in ops)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    m0, x0 = get_model(name, seed=0)
    m1, x1 = get_model(name, seed=0)
    m2, _ = get_model(name, seed=1)
    torch.testing.assert_close(x0, x1, rtol=0, atol=0)
    for (k, a), b in zip(m0.state_dict().items(), m1.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(m0.parameters(), m2.parameters()))
    with torch.no_grad():
        torch.testing.assert_close(m0(*x0), m1(*x1), rtol=0, atol=0)


def test_get_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_model("digits_mlp", seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name, expected", [("resnet18", 11_689_512), ("mobilenet_v2", 3_504_872)])
def test_param_counts(name, expected):
    model, _ = get_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - expected) / expected < 0.01, n


def test_load_digits_data():
    d = load_digits_data(seed=0)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    assert set(d.y_test.tolist()) == set(range(10))
    torch.testing.assert_close(load_digits_data(seed=0).x_test, d.x_test, rtol=0, atol=0)


@pytest.fixture(scope="module")
def digits_data():
    return load_digits_data(seed=0)


@pytest.mark.parametrize("name, cls", [("digits_cnn", DigitsCNN), ("digits_mlp", DigitsMLP)])
def test_digits_training_accuracy(name, cls, digits_data):
    model, _ = get_model(name, seed=0)
    assert isinstance(model, cls)
    assert train_digits_model(model, seed=0, data=digits_data) > 0.9
    assert not model.training


def test_digits_training_is_deterministic(digits_data):
    accs, weights = [], []
    for _ in range(2):
        model, _ = get_model("digits_mlp", seed=0)
        accs.append(train_digits_model(model, epochs=3, seed=0, data=digits_data))
        weights.append(model.fc.weight.detach().clone())
    assert accs[0] == accs[1] and torch.equal(weights[0], weights[1])
