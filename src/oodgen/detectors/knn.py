"""Deep nearest neighbours in feature space (Sun, Ming, Zhu & Li, ICML 2022).

Fit: the classifier's penultimate features of the training images, each L2-normalised,
form a memory bank.  Score (higher = more OOD)::

    z(x) = f(x) / ||f(x)||,   s(x) = || z(x) - z_(k)(x) ||

the Euclidean distance to the k-th nearest normalised training feature (the paper's
in-distribution score is its negative).  Computed exactly, by chunked matrix products
(``||a - b||^2 = 2 - 2 a.b`` for unit vectors) over the columns that are non-zero somewhere in
the bank; a feature vector that is all zero (every ReLU unit off) is left at zero, at distance
sqrt(2) from every unit vector.

Hyper-parameters: ``k`` (default 50, the paper's choice for CIFAR-10 with the full training
set), ``batch_size`` (1000 query rows per chunk).

Reference: Y. Sun, Y. Ming, X. Zhu, Y. Li, "Out-of-distribution detection with deep nearest
neighbors", ICML 2022.  Not in the OODGen paper; an extra modern baseline.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import InputError, BenchInfo
from .posthoc import PostHocDetector


def _normalise(f: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(f, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNN(PostHocDetector):
    """Distance to the k-th nearest L2-normalised training feature."""

    bench_info = BenchInfo("KNN", "extra", "outputs", "distance to the 50th nearest normalised training feature")

    uses = ("features",)

    def __init__(self, model: nn.Module, k: int = 50, batch_size: int = 1000):
        self.model = model
        self.k = k
        self.batch_size = batch_size

    def _fit_outputs(self, y: np.ndarray | None = None, features: np.ndarray | None = None, **_) -> None:
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"KNN: k must be a positive integer, got {self.k!r}")
        if self.k > len(features):
            raise InputError(f"KNN: k={self.k} exceeds the {len(features)} training samples; use a smaller k")
        self.bank_ = _normalise(features)

    def _live_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(columns where some bank row is non-zero, the bank restricted to them), cached.

        A column that is zero in every bank row adds nothing to any dot product with the bank, so
        dropping it (after the query is normalised over all columns) changes no distance beyond
        float rounding; post-ReLU features have many such units (35-48 of 128 in the seed-0 runs)."""
        if getattr(self, "_live_for", None) is not self.bank_:
            live = self.bank_.abs().amax(0) > 0
            self._live = (live, self.bank_[:, live].contiguous())
            self._live_for = self.bank_
        return self._live

    def _score_outputs(self, features: np.ndarray) -> np.ndarray:
        live, bank = self._live_bank()
        q = _normalise(features)[:, live]
        out = np.empty(len(q))
        for i in range(0, len(q), self.batch_size):
            sim = q[i:i + self.batch_size] @ bank.T
            kth = sim.topk(self.k, dim=1).values[:, -1].double()
            out[i:i + len(kth)] = torch.sqrt((2.0 - 2.0 * kth).clamp_min(0.0)).numpy()
        return out
