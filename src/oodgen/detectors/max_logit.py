"""Maximum logit (Hendrycks et al., ICML 2022, "MaxLogit").

Score (higher = more OOD)::

    s(x) = -max_k f_k(x)

the negated largest *unnormalised* logit (the paper's in-distribution score max_k f_k(x),
sign flipped).  Unlike the max softmax it keeps the logits' scale, which separates inputs on
which every class is weak.  Nothing is learned.

Hyper-parameters: ``batch_size`` (1000).

Reference: D. Hendrycks, S. Basart, M. Mazeika, A. Zou, J. Kwon, M. Mostajabi, J. Steinhardt,
D. Song, "Scaling out-of-distribution detection for real-world settings", ICML 2022.
Not in the OODGen paper; an extra baseline.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .posthoc import PostHocDetector
from .base import BenchInfo


class MaxLogit(PostHocDetector):
    """Negated maximum logit."""

    bench_info = BenchInfo("MaxLogit", "extra", "outputs", "-max logit")

    uses = ("logits",)

    def __init__(self, model: nn.Module, batch_size: int = 1000):
        self.model = model
        self.batch_size = batch_size

    def _score_outputs(self, logits: np.ndarray) -> np.ndarray:
        return -logits.max(axis=1)
