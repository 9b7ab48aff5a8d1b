"""Benchmark workloads: (name, torch module, example inputs as numpy arrays).

MiniLM and the digits CNN carry real trained weights (``sparsecc.models``). ResNet-50 is the torchvision v1.5
architecture with seeded random weights: no package ships its trained weights offline, and dense fp32 latency
does not depend on the values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Workload:
    name: str
    model: nn.Module
    inputs: tuple[np.ndarray, ...]
    input_names: tuple[str, ...]


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.down(x))


def resnet50(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers).eval()


def minilm(batch: int, seq: int = 128) -> Workload:
    from sparsecc.models.minilm import SAMPLE_SENTENCES, Tokenizer, load_minilm

    ids, mask = Tokenizer(seq)(SAMPLE_SENTENCES)
    reps = -(-batch // len(ids))
    ids, mask = ids.repeat(reps, 1)[:batch], mask.repeat(reps, 1)[:batch]
    return Workload(f"minilm_b{batch}_s{seq}", load_minilm(), (ids.numpy(), mask.numpy()),
                    ("input_ids", "attention_mask"))


def digits_cnn(batch: int) -> Workload:
    from sparsecc.models.digits import train_digits_cnn

    model, x, _ = train_digits_cnn()
    return Workload(f"digits_cnn_b{batch}", model, (x[:batch].numpy(),), ("x",))


def resnet(batch: int = 1) -> Workload:
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    return Workload(f"resnet50_b{batch}_224", resnet50(), (x,), ("x",))


WORKLOADS = {
    "minilm_b1": lambda: minilm(1),
    "minilm_b16": lambda: minilm(16),
    "resnet50_b1": lambda: resnet(1),
    "digits_b1": lambda: digits_cnn(1),
    "digits_b256": lambda: digits_cnn(256),
}
