"""Coloured versions of the grey sets, for testing shape-generic runs (28 x 28 x 3): each image
tinted with one random colour on black (every channel is the grey image times that channel's
weight, weights uniform in [0.25, 1]; seeded per image), and colour noise.

    from oodgen.data.coloured import tint, colour_noise
    x3 = tint(load("mnist", "train").images, seed=0)     # (N, 3, 28, 28)
"""
from __future__ import annotations

import numpy as np


def tint(images: np.ndarray, seed: int) -> np.ndarray:
    """Grey images (N, 1, H, W) or (N, H, W) in [0, 1] -> (N, 3, H, W), each with its own colour."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"tint: expected grey images (N, 1, H, W) or (N, H, W), got {x.shape}")
    colour = np.random.default_rng(seed).uniform(0.25, 1.0, size=(len(x), 3, 1, 1)).astype(np.float32)
    return x * colour


def colour_noise(n: int, shape: tuple[int, int, int] = (3, 28, 28), seed: int = 0) -> np.ndarray:
    """U[0, 1] colour noise (n, C, H, W)."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32)
