"""MC-dropout predictive uncertainty (Gal & Ghahramani, ICML 2016).

The classifier is run ``n_passes`` times with its dropout layers active (everything else in
eval mode); p_t(x) is the softmax of pass t and p_bar(x) = mean_t p_t(x).  Scores (higher =
more OOD), chosen with ``score=``:

* ``"entropy"`` (default): predictive entropy  H[p_bar(x)] = -sum_k p_bar_k log p_bar_k  (nats);
* ``"max-prob"``: 1 - max_k p_bar_k(x).

The OODGen paper (Table 2, "MC-Dropout") does not say which of the two it used or how many
passes; the entropy is the usual uncertainty score.  The mutual information of the same
passes is :class:`oodgen.detectors.mutual_info.MutualInformation`.

Randomness: the dropout masks come from a private RNG stream seeded with ``seed`` at every
``score`` call (the global torch RNG is saved and restored), so scores are reproducible for a
given (seed, batch_size).  For :class:`oodgen.models.Fig6cCNN` the convolutional trunk, which
has no dropout, is computed once per batch and only the dropout + dense layers are repeated;
this is the same computation as ``n_passes`` full forward passes, about 8x cheaper.

Hyper-parameters: ``n_passes`` (50), ``score`` ("entropy"), ``seed`` (0), ``batch_size`` (500).

Reference: Y. Gal, Z. Ghahramani, "Dropout as a Bayesian approximation: representing model
uncertainty in deep learning", ICML 2016.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import InputError, check_images, image_shape_of, BenchInfo
from .posthoc import PostHocDetector, entropy, model_device

SCORES = ("entropy", "max-prob")


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def _split(model: nn.Module) -> tuple[Callable, Callable]:
    """(deterministic trunk, stochastic rest) of the model; the trunk is empty in general."""
    from ..models import Fig6cCNN
    if type(model) is Fig6cCNN:
        def trunk(x):
            return F.max_pool2d(F.relu(model.conv2(F.relu(model.conv1(x)))), 2)

        def rest(h):
            return model.fc2(model.drop2(F.relu(model.fc1(model.drop1(h).flatten(1)))))
        return trunk, rest
    return (lambda x: x), model


def require_dropout(model: nn.Module, who: str) -> None:
    """Refuse a model without dropout layers (MC-dropout and mutual information need them)."""
    if not dropout_layers(model):
        raise InputError(f"{who}: {type(model).__name__} has no dropout layers")


def mc_dropout_moments(model: nn.Module, x, n_passes: int = 50, seed: int = 0, batch_size: int = 500
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax over ``n_passes`` dropout passes, shape (N, K), and the mean per-pass
    entropy, shape (N,), both float64."""
    if not (isinstance(n_passes, (int, np.integer)) and n_passes >= 1):
        raise ValueError(f"MC-dropout: n_passes must be a positive integer, got {n_passes!r}")
    require_dropout(model, "MC-dropout")
    drops = dropout_layers(model)
    x = check_images(x, "MC-dropout input", shape=image_shape_of(model))
    device = model_device(model)
    was_training = model.training
    trunk, rest = _split(model)
    mean_p, mean_h = [], []
    model.eval()
    for d in drops:
        d.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            for start in range(0, len(x), batch_size):
                h = trunk(x[start:start + batch_size].to(device))
                p_sum, h_sum = 0.0, 0.0
                for _ in range(n_passes):
                    p = torch.softmax(rest(h).double(), dim=1).cpu().numpy()
                    p_sum = p_sum + p
                    h_sum = h_sum + entropy(p)
                mean_p.append(p_sum / n_passes)
                mean_h.append(h_sum / n_passes)
    finally:
        model.train(was_training)
    return np.concatenate(mean_p), np.concatenate(mean_h)


def mc_dropout_score(mean_p: np.ndarray, rule: str = "entropy") -> np.ndarray:
    """OOD score from the mean softmax: predictive entropy or 1 - max probability."""
    if rule == "entropy":
        return entropy(mean_p)
    if rule == "max-prob":
        return 1.0 - mean_p.max(axis=1)
    raise ValueError(f"MC-dropout: unknown score {rule!r}; use one of {SCORES}")


class MCDropout(PostHocDetector):
    """Predictive entropy (or 1 - max probability) of the MC-dropout mean softmax."""

    bench_info = BenchInfo("MC-Dropout", "table2", "mc", "predictive entropy of the mean softmax of MC-dropout passes")
    mc_score = "entropy"          # what from_moments computes (recorded by the bench)

    @staticmethod
    def from_moments(mean_p: np.ndarray, mean_entropy: np.ndarray) -> np.ndarray:
        """The score from precomputed MC-dropout moments (what the bench caches)."""
        return mc_dropout_score(mean_p, "entropy")

    def __init__(self, model: nn.Module, n_passes: int = 50, score: str = "entropy", seed: int = 0,
                 batch_size: int = 500):
        self.model = model
        self.n_passes = n_passes
        self.score_rule = score
        self.seed = seed
        self.batch_size = batch_size

    @property
    def needs_images(self) -> bool:
        return True

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._check_model()
        if self.score_rule not in SCORES:
            raise ValueError(f"MC-dropout: unknown score {self.score_rule!r}; use one of {SCORES}")
        require_dropout(self.model, "MC-dropout")

    def _score(self, x: torch.Tensor) -> np.ndarray:
        mean_p, _ = mc_dropout_moments(self.model, x, self.n_passes, self.seed, self.batch_size)
        return mc_dropout_score(mean_p, self.score_rule)
