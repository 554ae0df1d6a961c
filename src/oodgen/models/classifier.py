"""The classifier of the paper's Figure 6c (Keras' ``mnist_cnn`` example) with k outputs.

Conv(32, 3x3) -> Conv(64, 3x3) -> MaxPool 2 -> Dropout 0.25 -> Dense 128 -> Dropout 0.5 ->
Dense k.  ``head="cosine"`` (beyond the paper, ``--head cosine``): the last layer's logits are
:data:`COSINE_SCALE` x the cosine between the (dropped-out) features and each output's weight vector,
its bias unused, so that training shapes the features' directions, which the feature KNN compares.
``features`` returns the penultimate (Dense-128, post-ReLU) activations that the
feature-space detectors (Mahalanobis, KNN, ViM) use; ``forward`` returns logits.

The input shape is a parameter (``in_channels``, ``image_size`` = (H, W), default the paper's
1 x 28 x 28): the Dense-128 layer takes the 64 x (H-4)/2 x (W-4)/2 map the convolutions leave.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HEADS

COSINE_SCALE = 16.0     # the cosine head's logit scale (NormFace's range; 16 saturates softmax for 11 outputs)


class Fig6cCNN(nn.Module):
    def __init__(self, n_outputs: int, in_channels: int = 1, image_size: tuple[int, int] = (28, 28),
                 head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"Fig6cCNN: head must be one of {HEADS}, got {head!r}")
        h, w = (int(v) for v in image_size)
        if h < 6 or w < 6:
            raise ValueError(f"Fig6cCNN: images must be at least 6 x 6, got {h} x {w}")
        self.n_outputs = n_outputs
        self.in_channels = in_channels
        self.image_size = (h, w)
        self.head_kind = head
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, n_outputs)
        if head == "cosine":       # its bias plays no part: frozen, so that no trainer (DDP) waits for its gradient
            self.fc2.bias.requires_grad_(False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU after the pooling (max and ReLU commute: the same numbers, forward and backward) on a
        # quarter of the values, and in place (no layer here needs its output for backward):
        # about a fifth off the scoring pass on the CPU (benchmarks/bench_rules.py).
        h = F.relu(self.conv1(x), inplace=True)
        h = F.relu(F.max_pool2d(self.conv2(h), 2), inplace=True)
        h = self.drop1(h).flatten(1)
        return F.relu(self.fc1(h), inplace=True)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "cosine":
            f = F.normalize(self.drop2(features).float(), dim=1)
            return COSINE_SCALE * F.linear(f, F.normalize(self.fc2.weight.float(), dim=1))
        return self.fc2(self.drop2(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
