"""Small models for scikit-learn's ``load_digits`` (8x8 grayscale, 10 classes).

Includes a data loader returning normalized float32 tensors and a short,
deterministic CPU training loop, so tests can check accuracy after compression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["DigitsCNN", "DigitsMLP", "DigitsData", "load_digits_data", "train_digits_model", "evaluate_digits_model"]


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2 -> maxpool -> Conv-BN-ReLU -> global avg pool -> Linear. Input (B, 1, 8, 8)."""

    def __init__(self, num_classes: int = 10, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class DigitsMLP(nn.Module):
    """64 -> [Linear -> BatchNorm1d -> ReLU] per hidden size -> Linear(10). Input (B, 64)."""

    def __init__(self, hidden: int | Sequence[int] = (128, 64), num_classes: int = 10) -> None:
        super().__init__()
        sizes = [hidden] if isinstance(hidden, int) else list(hidden)
        layers: list[nn.Module] = []
        in_f = 64
        for h in sizes:
            layers += [nn.Linear(in_f, h), nn.BatchNorm1d(h), nn.ReLU()]
            in_f = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(in_f, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class DigitsData(NamedTuple):
    """Train/test split; images are (N, 1, 8, 8) float32, labels (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data(seed: int = 0, test_size: float = 0.25) -> DigitsData:
    """Load sklearn digits, stratified split by ``seed``, standardized with train statistics.

    Images come as (N, 1, 8, 8); use ``x.flatten(1)`` for the MLP.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        ds.data, ds.target, test_size=test_size, random_state=seed, stratify=ds.target
    )
    x_tr = torch.as_tensor(x_tr, dtype=torch.float32)
    x_te = torch.as_tensor(x_te, dtype=torch.float32)
    mean, std = x_tr.mean(), x_tr.std()  # global pixel statistics (many pixels are constant)
    return DigitsData(
        ((x_tr - mean) / std).reshape(-1, 1, 8, 8),
        torch.as_tensor(y_tr, dtype=torch.int64),
        ((x_te - mean) / std).reshape(-1, 1, 8, 8),
        torch.as_tensor(y_te, dtype=torch.int64),
    )


def _wants_flat(model: nn.Module) -> bool:
    """True if the first Conv2d/Linear in the model is a Linear (flat 64-vector input)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return False
        if isinstance(m, nn.Linear):
            return True
    raise ValueError("cannot infer input layout; pass flat=True/False")


@torch.no_grad()
def evaluate_digits_model(model: nn.Module, data: DigitsData | None = None, flat: bool | None = None) -> float:
    """Test-set accuracy of ``model`` (put in eval mode)."""
    data = data if data is not None else load_digits_data()
    flat = _wants_flat(model) if flat is None else flat
    x = data.x_test.flatten(1) if flat else data.x_test
    model.eval()
    return (model(x).argmax(1) == data.y_test).float().mean().item()


def train_digits_model(
    model: nn.Module,
    epochs: int = 10,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    data: DigitsData | None = None,
    flat: bool | None = None,
) -> float:
    """Train in place with Adam (deterministic for ``seed``); return test accuracy.

    ``flat`` selects (N, 64) vs (N, 1, 8, 8) inputs; inferred from the model if None.
    Runs single-threaded (faster and steadier for models this small); the
    global RNG state and thread count are restored; the model ends in eval mode.
    """
    data = data if data is not None else load_digits_data(seed)
    flat = _wants_flat(model) if flat is None else flat
    x = data.x_train.flatten(1) if flat else data.x_train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            _train_loop(model, x, data.y_train, epochs, seed, lr, batch_size)
    finally:
        torch.set_num_threads(threads)
    return evaluate_digits_model(model, data, flat)


def _train_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float, batch_size: int
) -> None:
    torch.manual_seed(seed)  # covers dropout, if a model has any
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
