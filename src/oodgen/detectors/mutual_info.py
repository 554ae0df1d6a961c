"""Mutual information between prediction and weights under MC-dropout ("BALD";
Houlsby et al. 2011, Gal, Islam & Ghahramani, ICML 2017).

With p_t(x) the softmax of dropout pass t = 1..T and p_bar = mean_t p_t, the score (higher =
more OOD) is the epistemic part of the predictive entropy::

    s(x) = H[p_bar(x)] - mean_t H[p_t(x)]      (nats, >= 0)

It is large when the passes disagree confidently, small when they agree (even on a flat
prediction).  The dropout passes are those of :mod:`oodgen.detectors.mc_dropout` (same
seeding and the same Fig. 6c fast path).

Hyper-parameters: ``n_passes`` (50), ``seed`` (0), ``batch_size`` (500).

References: N. Houlsby, F. Huszar, Z. Ghahramani, M. Lengyel, "Bayesian active learning for
classification and preference learning", 2011; Y. Gal, R. Islam, Z. Ghahramani, "Deep
Bayesian active learning with image data", ICML 2017.  Table 2 of the OODGen paper
("Mutual-Info").
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .mc_dropout import mc_dropout_moments, require_dropout
from .posthoc import PostHocDetector, entropy
from .base import BenchInfo


def mutual_information(mean_p: np.ndarray, mean_entropy: np.ndarray) -> np.ndarray:
    """H[mean p] - mean H[p], clipped at 0 against rounding."""
    return np.maximum(entropy(mean_p) - mean_entropy, 0.0)


class MutualInformation(PostHocDetector):
    """BALD mutual information of MC-dropout passes."""

    bench_info = BenchInfo("Mutual-Info", "table2", "mc", "H[mean p] - mean H[p] over MC-dropout passes")

    @staticmethod
    def from_moments(mean_p: np.ndarray, mean_entropy: np.ndarray) -> np.ndarray:
        """The score from precomputed MC-dropout moments (what the bench caches)."""
        return mutual_information(mean_p, mean_entropy)

    def __init__(self, model: nn.Module, n_passes: int = 50, seed: int = 0, batch_size: int = 500):
        self.model = model
        self.n_passes = n_passes
        self.seed = seed
        self.batch_size = batch_size

    @property
    def needs_images(self) -> bool:
        return True

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._check_model()
        require_dropout(self.model, "mutual information")

    def _score(self, x: torch.Tensor) -> np.ndarray:
        return mutual_information(*mc_dropout_moments(self.model, x, self.n_passes, self.seed, self.batch_size))
