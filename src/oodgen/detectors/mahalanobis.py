"""Mahalanobis distance in feature space (Lee, Lee, Lee & Shin, NeurIPS 2018), without the
feature ensemble, as the OODGen paper uses it ("MD").

Fit (on the classifier's penultimate features f(x) of the training images): one mean per
class mu_c and one *tied* covariance Sigma of the class-centred features (the maximum-likelihood
estimate, as ``sklearn.covariance.EmpiricalCovariance`` in the reference code), inverted with a
pseudo-inverse (ReLU features often have dead, constant dimensions).

Score (higher = more OOD)::

    d_c(x)^2 = (f(x) - mu_c)^T Sigma^+ (f(x) - mu_c)
    x'       = x - eps * sign( grad_x 0.5 d_{c*}(x)^2 ),  c* = argmin_c d_c(x)
    s(x)     = min_c 0.5 d_c(x')^2

The paper's confidence score is max_c -0.5 d_c^2; we report its negation.  The pre-processing
step moves the input towards its closest class mean (as the reference code
``pokaxpoka/deep_Mahalanobis_detector``; ``sign`` maps 0 to +1; no clipping).  ``eps = 0``
skips it, and the score is then a function of cached features alone.

Hyper-parameters: ``eps`` (default 0.0; the reference grid is :data:`MAHALANOBIS_EPSILONS`,
chosen by :func:`tune_mahalanobis` with the same ``test-ood`` / ``fair`` protocols as ODIN,
see :mod:`oodgen.detectors.odin`), ``batch_size`` (500).  Features are ``model.features``
(for :class:`oodgen.models.Fig6cCNN`, the Dense-128 post-ReLU layer).

Reference: K. Lee, K. Lee, H. Lee, J. Shin, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", NeurIPS 2018.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .base import InputError, check_images, image_shape_of, BenchInfo
from .posthoc import TunedDetector, grid_points, model_device, select_point, sign_step

MAHALANOBIS_EPSILONS: tuple[float, ...] = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)


class Mahalanobis(TunedDetector):
    """Minimum class-conditional Mahalanobis distance with a tied covariance."""

    bench_info = BenchInfo("MD", "table1", "tuned", "min_c 0.5 d_c^2 of penultimate features after input pre-processing eps", fair_variant=True)

    uses = ("features",)
    needs_labels = True
    param_grid = {"eps": MAHALANOBIS_EPSILONS}

    def grid_scores(self, x, points: list[dict] | None = None) -> np.ndarray:
        """(points, N): every eps of the grid (or of ``points``) from one gradient per batch."""
        eps = self.param_grid["eps"] if points is None else [p["eps"] for p in points]
        return mahalanobis_grid_scores(self, x, eps)

    def __init__(self, model: nn.Module, eps: float = 0.0, batch_size: int = 500):
        self.model = model
        self.eps = eps
        self.batch_size = batch_size

    @property
    def needs_images(self) -> bool:
        return float(self.eps) != 0.0

    def _fit_outputs(self, y: np.ndarray | None = None, features: np.ndarray | None = None, **_) -> None:
        classes = np.unique(y)
        if len(classes) < 1:
            raise InputError("Mahalanobis: no training labels")
        means = np.stack([features[y == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, y)]
        cov = centred.T @ centred / len(features)
        self.classes_ = classes
        self.means_ = means
        self.covariance_ = cov
        self.precision_ = np.linalg.pinv(cov, hermitian=True)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances d_c^2 to every class mean, shape (N, n_classes)."""
        f = np.asarray(features, dtype=np.float64)
        out = np.empty((len(f), len(self.means_)))
        for c, mu in enumerate(self.means_):
            z = f - mu
            out[:, c] = np.einsum("nd,nd->n", z @ self.precision_, z)
        return np.maximum(out, 0.0)

    def _score_outputs(self, features: np.ndarray) -> np.ndarray:
        return 0.5 * self.distances(features).min(axis=1)

    def _score(self, x: torch.Tensor) -> np.ndarray:
        self._check_model()
        return mahalanobis_grid_scores(self, x, [self.eps])[0]


def mahalanobis_grid_scores(detector: Mahalanobis, x, epsilons: Sequence[float] = MAHALANOBIS_EPSILONS
                            ) -> np.ndarray:
    """Scores of a fitted :class:`Mahalanobis` detector for every eps, shape (len(eps), N)."""
    if not getattr(detector, "fitted_", False):
        from ..generate import NotFittedError
        raise NotFittedError("Mahalanobis is not fitted: call fit(x_train, y_train) first")
    if len(epsilons) == 0 or any(not float(e) >= 0 for e in epsilons):
        raise ValueError(f"Mahalanobis: eps values must be >= 0 and the grid non-empty, got {list(epsilons)}")
    x = check_images(x, "Mahalanobis input", shape=image_shape_of(detector.model))
    model = detector.model
    was_training = model.training
    model.eval()
    device = model_device(model)
    means = torch.as_tensor(detector.means_, dtype=torch.float32, device=device)
    precision = torch.as_tensor(detector.precision_, dtype=torch.float32, device=device)
    out = np.empty((len(epsilons), len(x)))
    try:
        for start in range(0, len(x), detector.batch_size):
            xb = x[start:start + detector.batch_size].to(device)
            need_grad = any(float(e) != 0.0 for e in epsilons)
            xb.requires_grad_(need_grad)
            with torch.set_grad_enabled(need_grad):
                feats = model.features(xb)
            clean = feats.detach().double().cpu().numpy()
            if need_grad:
                nearest = torch.as_tensor(detector.distances(clean).argmin(axis=1), device=device)
                z = feats - means[nearest]
                loss = 0.5 * ((z @ precision) * z).sum()
                (grad,) = torch.autograd.grad(loss, xb)
                step = sign_step(grad)
            for j, eps in enumerate(epsilons):
                if float(eps) == 0.0:
                    f = clean
                else:
                    with torch.no_grad():
                        f = model.features(xb.detach() - float(eps) * step).double().cpu().numpy()
                out[j, start:start + len(xb)] = detector._score_outputs(f)
    finally:
        model.train(was_training)
    return out


def select_mahalanobis(grid_in: np.ndarray, grid_out: np.ndarray,
                       epsilons: Sequence[float] = MAHALANOBIS_EPSILONS) -> dict:
    """Choose eps from precomputed :func:`mahalanobis_grid_scores` of validation in/out images."""
    return select_point(grid_points({"eps": epsilons}), grid_in, grid_out)


def tune_mahalanobis(detector: Mahalanobis, x_in_val, x_out_val,
                     grid_eps: Sequence[float] = MAHALANOBIS_EPSILONS) -> dict:
    """Tune the pre-processing magnitude of a *fitted* detector by FPR at 95 % TPR.

    Returns a dict with ``eps`` (the choice), its ``fpr95`` / ``auroc`` on the validation pair
    and the whole ``grid``; apply it with ``detector.eps = result["eps"]`` (the fitted
    statistics do not depend on eps).
    """
    g_in = mahalanobis_grid_scores(detector, x_in_val, grid_eps)
    g_out = mahalanobis_grid_scores(detector, x_out_val, grid_eps)
    return select_mahalanobis(g_in, g_out, grid_eps)

