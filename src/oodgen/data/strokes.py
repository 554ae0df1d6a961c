"""Procedural pen strokes: a validation signal that needs no dataset (``docs/protocol.md``, round 2).

Each image holds 1 to 3 random cubic Bezier strokes, drawn with a round pen of random width
(1.2 to 3 pixels) in white on black (the polarity of MNIST and Fashion-MNIST), anti-aliased over one
pixel.  Control points lie in the central 80 % of the frame.  Nothing here reads a dataset: the
images stand for handwriting-like inputs (glyphs, letters, symbols) that are not the training data.
"""
from __future__ import annotations

import numpy as np
import torch

N_STROKES = (1, 3)          # strokes per image, inclusive
PEN_WIDTH = (1.2, 3.0)      # pixels
POINTS_PER_STROKE = 48      # samples along each curve
MARGIN = 0.1                # control points lie in [MARGIN, 1 - MARGIN] of the frame


def strokes(n: int, size: int = 28, seed: int = 0, chunk: int = 256) -> torch.Tensor:
    """``n`` stroke images of shape (n, 1, size, size), float32 in [0, 1], from ``seed``."""
    if n < 0 or size < 4:
        raise ValueError(f"strokes: need n >= 0 and size >= 4, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)
    basis = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3], axis=1)   # (P, 4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    grid = np.stack([yy.ravel(), xx.ravel()], axis=1)                                                  # (S*S, 2)
    out = np.zeros((n, size * size), dtype=np.float64)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        k = rng.integers(N_STROKES[0], N_STROKES[1] + 1, size=m)
        ctrl = rng.uniform(MARGIN, 1 - MARGIN, size=(m, N_STROKES[1], 4, 2)) * size
        width = rng.uniform(*PEN_WIDTH, size=(m, N_STROKES[1]))
        pts = np.einsum("pc,mscd->mspd", basis, ctrl)                                 # (m, strokes, P, 2)
        d = np.linalg.norm(pts[:, :, :, None, :] - grid[None, None, None], axis=-1).min(axis=2)  # (m, strokes, S*S)
        ink = np.clip(width[..., None] / 2 + 0.5 - d, 0.0, 1.0)
        ink[np.arange(N_STROKES[1])[None, :] >= k[:, None]] = 0.0
        out[start:start + m] = ink.max(axis=1)
    return torch.from_numpy(out.reshape(n, 1, size, size).astype(np.float32))
