"""graphopt.optimize: the one call from a model to a compiled library, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt.errors import GraphoptError
from graphopt.models import get_model


@pytest.fixture(scope="module")
def digits():
    model, (x,) = get_model("digits_cnn", seed=1)
    with torch.no_grad():
        expected = model(x).numpy()
    return model, x, expected


def test_optimize_torch_model_for_host(digits):
    model, x, expected = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = graphopt.optimize(model, example_inputs=(x,), target="x86")
    out = compiled(x.numpy())
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert isinstance(compiled(x), torch.Tensor)  # torch in, torch out
    assert compiled.metadata()["pipeline"] == graphopt.api.DEFAULT_PIPELINE
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is untouched


def test_optimize_onnx_file_with_explicit_pipeline_save_and_load(digits, tmp_path):
    model, x, expected = digits
    onnx_path = tmp_path / "digits.onnx"
    graphopt.trace(model, (x,)).save_onnx(onnx_path)
    original = onnx_path.read_bytes()
    compiled = graphopt.optimize(onnx_path, target="x86", pipeline="fold-bn,eliminate-dead-code")
    assert onnx_path.read_bytes() == original
    lib = compiled.save(tmp_path / "digits.so")
    loaded = graphopt.load_compiled(lib)
    np.testing.assert_allclose(loaded(x.numpy()), expected, atol=1e-5)
    assert loaded.metadata()["pipeline"] == "fold-bn,eliminate-dead-code"


def test_cross_target_builds_but_does_not_run_here(digits):
    model, x, _ = digits
    compiled = graphopt.optimize(model, (x,), target="arm", verify=False)
    assert compiled.is_cross
    with pytest.raises(GraphoptError, match="run_remote"):
        compiled(x.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="armv9"), "unknown target 'armv9'"),
        (dict(pipeline="fold-bm"), "did you mean 'fold-bn'"),
        (dict(tune=4), "needs db=DIR"),
    ],
)
def test_bad_arguments_are_named(digits, kwargs, message):
    model, x, _ = digits
    with pytest.raises(GraphoptError, match=message):
        graphopt.optimize(model, (x,), **kwargs)


def test_module_without_example_inputs(digits):
    with pytest.raises(GraphoptError, match="needs example_inputs"):
        graphopt.optimize(digits[0])
