"""ViM: virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022).

Fit, on the penultimate features f of the training images, with the final linear layer
logits = W f + b:

* origin u = -W^+ b (the feature point whose logits are all zero); centred features f - u;
* principal subspace P: the ``dim`` leading eigenvectors of the (uncentred) covariance of
  f - u; its orthogonal complement R holds the *residual*;
* virtual logit  v(x) = alpha * || R^T (f(x) - u) ||, with
  alpha = mean_train max_k logit_k / mean_train ||R^T (f - u)|| (matches the scales).

Score (higher = more OOD)::

    s(x) = alpha * || R^T (f(x) - u) ||  -  logsumexp_k logit_k(x)

i.e. minus the paper's in-distribution score (energy of the logits minus the virtual logit;
equivalently the virtual class's softmax probability up to a monotone map).

Hyper-parameters:

* ``dim``: principal subspace dimension; default ``None`` = the paper's rule (1000 if the
  feature size is >= 2048, 512 if >= 768) and otherwise half the feature size (64 for the
  Fig. 6c CNN's 128 features);
* ``head``: the final ``nn.Linear`` (default: ``model.head`` if it is an ``nn.Linear``, else
  ``model.fc2``; the Fig. 6c CNN's head is dropout + ``fc2``, identical in eval mode);
* ``batch_size`` (1000).

Reference: H. Wang, Z. Li, L. Feng, W. Zhang, "ViM: Out-of-distribution with virtual-logit
matching", CVPR 2022.  Not in the OODGen paper; an extra modern baseline.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .base import InputError, BenchInfo
from .posthoc import PostHocDetector, logsumexp


def default_dim(n_features: int) -> int:
    """The ViM paper's subspace size rule, with half the features for small networks."""
    if n_features >= 2048:
        return 1000
    if n_features >= 768:
        return 512
    return max(1, n_features // 2)


class ViM(PostHocDetector):
    """Residual norm outside the principal feature subspace, scaled against the energy."""

    bench_info = BenchInfo("ViM", "extra", "outputs", "alpha * residual norm - logsumexp(logits)")

    uses = ("features",)

    def __init__(self, model: nn.Module, dim: int | None = None, head: nn.Linear | None = None,
                 batch_size: int = 1000):
        self.model = model
        self.dim = dim
        self.head = head
        self.batch_size = batch_size

    def _linear(self) -> nn.Linear:
        if self.head is not None:
            lin = self.head
        elif isinstance(getattr(self.model, "head", None), nn.Linear):
            lin = self.model.head
        else:
            lin = getattr(self.model, "fc2", None)
        if not isinstance(lin, nn.Linear):
            raise InputError("ViM needs the final linear layer: pass head=<nn.Linear> "
                             "(the model has neither an nn.Linear head nor fc2)")
        return lin

    def _fit_outputs(self, y: np.ndarray | None = None, features: np.ndarray | None = None, **_) -> None:
        lin = self._linear()
        w = lin.weight.detach().double().cpu().numpy()
        b = (lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0]))
        n_feat = features.shape[1]
        if w.shape[1] != n_feat:
            raise InputError(f"ViM: the head takes {w.shape[1]} features but the model gives {n_feat}")
        dim = default_dim(n_feat) if self.dim is None else int(self.dim)
        if not 0 < dim < n_feat:
            raise ValueError(f"ViM: dim must be in [1, {n_feat - 1}] for {n_feat} features, got {dim}")
        origin = -np.linalg.pinv(w) @ b
        centred = features - origin
        eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / len(centred))
        order = np.argsort(eigvals)[::-1]
        residual = np.ascontiguousarray(eigvecs[:, order[dim:]])
        vnorm = np.linalg.norm(centred @ residual, axis=1)
        if not vnorm.mean() > 0:
            raise InputError("ViM: the training features have no residual outside the principal "
                             f"subspace of dim {dim}; choose a smaller dim")
        logits = features @ w.T + b
        self.weight_, self.bias_, self.origin_ = w, b, origin
        self.dim_ = dim
        self.residual_basis_ = residual
        self.alpha_ = float(logits.max(axis=1).mean() / vnorm.mean())

    def _score_outputs(self, features: np.ndarray) -> np.ndarray:
        virtual = self.alpha_ * np.linalg.norm((features - self.origin_) @ self.residual_basis_, axis=1)
        return virtual - logsumexp(features @ self.weight_.T + self.bias_)
