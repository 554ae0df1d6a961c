"""The DCGAN of the confident classifier (:mod:`oodgen.detectors.confident`), sized for 28x28 grey images.

* :class:`DCGANGenerator`: z (100) -> ConvT 7x7 -> 7x7x128, BN, ReLU -> ConvT 4x4 s2 -> 14x14x64, BN,
  ReLU -> ConvT 4x4 s2 -> 28x28x1, sigmoid (images in [0, 1] like the data);
* :class:`DCGANDiscriminator`: Conv 4x4 s2 -> 14x14x64, LeakyReLU 0.2 -> Conv 4x4 s2 -> 7x7x128, BN,
  LeakyReLU 0.2 -> linear -> one logit;
* :func:`dcgan_init`: weights N(0, 0.02), BatchNorm scales N(1, 0.02).

The attribute names (``net``) are the keys of the state dicts in confident-classifier checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn


class DCGANGenerator(nn.Module):
    """z (B, nz) -> images (B, 1, 28, 28) in [0, 1]."""

    def __init__(self, nz: int = 100):
        super().__init__()
        self.nz = nz
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images (B, 1, 28, 28) -> real/fake logits (B,)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
