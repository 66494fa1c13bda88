"""A small CNN classifier for the embedded digits default; takes [0, 1] images."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(32)–conv(64)–pool–conv(128)–pool to 4×4–fc(128)–fc(classes); normalization inside."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32,
                 mean: float = 0.5, std: float = 0.5):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))   # input normalization lives here
        self.register_buffer("std", torch.tensor(std))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 16, 4 * width), nn.ReLU(),
                                  nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std))
