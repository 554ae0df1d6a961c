"""The classifier of the paper's Figure 6c (Keras' ``mnist_cnn`` example) with k outputs.

Conv(32, 3x3) -> Conv(64, 3x3) -> MaxPool 2 -> Dropout 0.25 -> Dense 128 -> Dropout 0.5 ->
Dense k.  ``features`` returns the penultimate (Dense-128, post-ReLU) activations that the
feature-space detectors (Mahalanobis, KNN, ViM) use; ``forward`` returns logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Fig6cCNN(nn.Module):
    def __init__(self, n_outputs: int, in_channels: int = 1):
        super().__init__()
        self.n_outputs = n_outputs
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = self.drop1(h).flatten(1)
        return F.relu(self.fc1(h))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop2(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
