"""Maximum softmax probability (MSP), the baseline of Hendrycks & Gimpel (ICLR 2017).

Score (higher = more OOD)::

    s(x) = 1 - max_k softmax(f(x))_k

where f(x) are the classifier's logits.  The paper's confidence max_k p(k|x) is flipped into
an OOD score at this boundary.  Nothing is learned: ``fit`` only checks its inputs.

Hyper-parameters: ``batch_size`` (1000), only for memory.

Reference: D. Hendrycks, K. Gimpel, "A baseline for detecting misclassified and
out-of-distribution examples in neural networks", ICLR 2017.  Table 2 of the OODGen paper
("Softmax").
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .posthoc import PostHocDetector, softmax
from .base import BenchInfo


class MaxSoftmax(PostHocDetector):
    """1 - max softmax probability of a trained classifier."""

    bench_info = BenchInfo("Softmax", "table2", "outputs", "1 - max softmax")

    uses = ("logits",)

    def __init__(self, model: nn.Module, batch_size: int = 1000):
        self.model = model
        self.batch_size = batch_size

    def _score_outputs(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 - softmax(logits).max(axis=1)
