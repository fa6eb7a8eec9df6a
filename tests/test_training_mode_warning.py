"""A torch model left in training mode: traced and compiled in eval mode, with a warning; never mutated."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.api import import_model
from graphopt.frontends.fx import trace


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    return model.train()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("entry", ["trace", "import_model"])
def test_training_model_warns_and_is_left_untouched(entry):
    model, x = _model(), torch.randn(4, 6)
    before = _state(model)
    with pytest.warns(UserWarning, match="training mode.*eval mode.*outputs differ"):
        graph = trace(model, (x,)) if entry == "trace" else import_model(model, (x,))
    assert all(m.training for m in model.modules())  # the mode is restored
    for k, v in model.state_dict().items():  # nor are running statistics updated
        assert torch.equal(v, before[k]), k
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    (y,) = graph.run([x.numpy()])
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)  # compiled as eval


def test_a_submodule_in_training_mode_is_named():
    model = _model().eval()
    model[1].train()
    with pytest.warns(UserWarning, match=r"\(1\.training is True\)"):
        trace(model, (torch.randn(2, 6),))
    assert model[1].training and not model[0].training and not model.training


def test_eval_model_traces_without_a_warning():
    model = _model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trace(model, (torch.randn(2, 6),))
