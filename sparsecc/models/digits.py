"""A small CNN trained in seconds on sklearn's real 8x8 digits (1,797 images): a real accuracy metric
for CNN compilation and compression, with conv, batch norm, depthwise conv, pooling and linear."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images scaled to [0, 1], shape [n, 1, 8, 8]; a fixed 75/25 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(x))
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]


def train_digits_cnn(epochs: int = 15, seed: int = 0) -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    """Trains the CNN (a few seconds on 2 cores); returns the eval-mode model and the held-out test set."""
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = digits_data(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    return model.eval(), x_te, y_te


def accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor) -> float:
    pred = torch.as_tensor(np.asarray(logits)).argmax(1)
    return float((pred == labels).float().mean())
