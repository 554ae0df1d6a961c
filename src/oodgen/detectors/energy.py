"""Energy score (Liu, Wang, Owens & Li, NeurIPS 2020).

The free energy of the logits f(x) at temperature T is ``E(x) = -T * logsumexp(f(x) / T)``;
in-distribution inputs have *lower* energy, so the energy itself is already an OOD score
(higher = more OOD)::

    s(x) = -T * logsumexp_k(f_k(x) / T)

(The paper uses the negative energy as an in-distribution score; no sign flip is needed here.)
Nothing is learned.

Hyper-parameters: ``temperature`` T (default 1.0, the paper's choice), ``batch_size`` (1000).

Reference: W. Liu, X. Wang, J. Owens, Y. Li, "Energy-based out-of-distribution detection",
NeurIPS 2020.  Not in the OODGen paper; an extra modern baseline.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .posthoc import PostHocDetector, logsumexp
from .base import BenchInfo


class Energy(PostHocDetector):
    """Free energy -T logsumexp(f/T) of the logits."""

    bench_info = BenchInfo("Energy", "extra", "outputs", "-logsumexp(logits) (T = 1)")

    uses = ("logits",)

    def __init__(self, model: nn.Module, temperature: float = 1.0, batch_size: int = 1000):
        self.model = model
        self.temperature = temperature
        self.batch_size = batch_size

    def _score_outputs(self, logits: np.ndarray) -> np.ndarray:
        t = float(self.temperature)
        if not t > 0:
            raise ValueError(f"Energy: temperature must be > 0, got {self.temperature}")
        return -t * logsumexp(logits / t)
