"""Nearest neighbours in pixel space: a classifier-free baseline (not in the OODGen paper).

Fit: the in-distribution training images, each flattened and L2-normalised, form a memory bank
(``bank_size``: all of them, or a seeded random subset).  Score (higher = more OOD): the
Euclidean distance of the normalised image to its k-th nearest normalised training image, the
pixel-space counterpart of the feature KNN of Sun et al. (2022) (:mod:`oodgen.detectors.knn`).

Why it is here: ``reject+fisher`` (:mod:`oodgen.detectors.fusion`) uses this distance as one of
its four statistics (:class:`oodgen.detectors.image_stats.PixelBank`, 30,000 images), so the
benchmark shows what it does on its own, with the whole training set as its bank.

Hyper-parameters: ``k`` (default 50), ``bank_size`` (default ``None`` = every training image),
``seed`` (the subset, when ``bank_size`` is smaller than the training set).  ``model`` is
accepted for the registry's signature and ignored: no classifier is involved.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Detector, InputError, BenchInfo
from .image_stats import PixelBank


class PixelKNN(Detector):
    """Distance to the k-th nearest L2-normalised training image."""

    bench_info = BenchInfo("Pixel KNN", "extra", "images", "distance to the 50th nearest normalised training image (pixel space, no classifier)")

    @classmethod
    def for_bench(cls, seed: int) -> "PixelKNN":
        """The configuration ``oodgen bench`` runs (k = 50, the bank subset seeded by the run)."""
        return cls(k=50, seed=seed)

    def __init__(self, model=None, k: int = 50, bank_size: int | None = None, seed: int = 0):
        self.model = model
        self.k = k
        self.bank_size = bank_size
        self.seed = seed

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"PixelKNN: k must be a positive integer, got {self.k!r}")
        size = len(x) if self.bank_size is None else int(self.bank_size)
        if self.k > min(size, len(x)):
            raise InputError(f"PixelKNN: k={self.k} exceeds the {min(size, len(x))} training images; use a smaller k")
        self.bank_ = PixelBank.from_training_set(x, self.seed, size, self.k)

    def _score(self, x: torch.Tensor) -> np.ndarray:
        return self.bank_.distance(x)
