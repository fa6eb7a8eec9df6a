"""Named model table: constructors plus example-input factories.

``get_model(name, batch_size, seed)`` returns an eval-mode model whose weights
are initialized deterministically from ``seed`` and a tuple of example inputs
(also seeded) ready for ``model(*inputs)`` or ``torch.export.export``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .bert import bert_small
from .digits import DigitsCNN, DigitsMLP
from .mobilenet import mobilenet_v2
from .resnet import resnet18
from .vit import vit_small

__all__ = ["ModelSpec", "MODELS", "list_models", "get_spec", "build_model", "example_inputs", "get_model"]

# Builds example inputs for a constructed model: (model, batch_size, generator) -> inputs.
InputFn = Callable[[nn.Module, int, torch.Generator], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    inputs: InputFn
    description: str


def _image(size: int, chans: int = 3) -> InputFn:
    return lambda m, b, g: (torch.randn(b, chans, size, size, generator=g),)


def _vit_inputs(m: nn.Module, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randn(b, m.in_chans, m.image_size, m.image_size, generator=g),)


def _bert_inputs(m: nn.Module, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, m.vocab_size, (b, m.seq_len), generator=g, dtype=torch.int64),)


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("resnet18", resnet18, _image(224), "ResNet-18, 1000 classes, 3x224x224"),
        ModelSpec("mobilenet_v2", mobilenet_v2, _image(224), "MobileNetV2 1.0, 1000 classes, 3x224x224"),
        ModelSpec("vit_small", vit_small, _vit_inputs, "ViT patch 8, dim 128, depth 4, 4 heads, 3x32x32"),
        ModelSpec("bert_small", bert_small, _bert_inputs, "BERT encoder, hidden 128, 2 layers, 4 heads, 32 int64 ids"),
        ModelSpec("digits_cnn", DigitsCNN, _image(8, 1), "sklearn digits CNN, 1x8x8"),
        ModelSpec(
            "digits_mlp", DigitsMLP, lambda m, b, g: (torch.randn(b, 64, generator=g),), "sklearn digits MLP, 64"
        ),
    )
}


def list_models() -> list[str]:
    """Names of all registered models."""
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    """Registry entry for ``name``; raises ``KeyError`` listing the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}") from None


def build_model(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    """Construct ``name`` with weights seeded by ``seed``, in eval mode; kwargs go to the constructor."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = spec.build(**kwargs)
    return model.eval()


def example_inputs(name: str, model: nn.Module, batch_size: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded example inputs for ``model`` (built from registry entry ``name``)."""
    return get_spec(name).inputs(model, batch_size, torch.Generator().manual_seed(seed))


def get_model(
    name: str, batch_size: int = 1, seed: int = 0, **kwargs: Any
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return ``(model_in_eval_mode, example_inputs)`` for a registered model."""
    model = build_model(name, seed=seed, **kwargs)
    return model, example_inputs(name, model, batch_size, seed)
