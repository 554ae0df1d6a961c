"""Shared machinery of the post-hoc detectors: they score a *trained* classifier's outputs.

A post-hoc detector is built around a classifier ``model`` (an ``nn.Module`` whose ``forward``
returns logits, with ``features(x)`` = penultimate activations and ``head(features)`` = logits,
like :class:`oodgen.models.Fig6cCNN`).  It never trains the model and never changes its mode
for longer than one call.

Most post-hoc scores are functions of the model's *outputs* (logits and/or penultimate
features).  Those detectors declare which outputs they use (``uses``) and implement
``_fit_outputs`` / ``_score_outputs``; ``fit(x, y)`` and ``score(x)`` compute the outputs of the
images in batches and call them.  ``fit_outputs`` / ``score_outputs`` accept precomputed arrays,
so a benchmark can run the classifier once per image set and reuse its outputs for every
method (``oodgen bench`` caches them in the run directory).  Detectors that need the images
themselves (input perturbation, dropout sampling) report ``needs_images = True``.
"""
from __future__ import annotations

import abc
import itertools

import numpy as np
import torch
from torch import nn

from ..metrics import ood_metrics
from .base import N_THRESHOLD, Detector, InputError

OUTPUT_NAMES = ("features", "logits")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def model_outputs(model: nn.Module, x: torch.Tensor, uses=OUTPUT_NAMES, batch_size: int = 256
                  ) -> dict[str, np.ndarray]:
    """Penultimate features and/or logits of ``x``, in eval mode, as float32 numpy arrays.

    ``features`` needs ``model.features``; ``logits`` is ``model.head(features)`` when features
    are computed anyway (identical to ``model(x)`` in eval mode), else ``model(x)``.
    """
    uses = tuple(uses)
    if "features" in uses and not (hasattr(model, "features") and hasattr(model, "head")):
        raise InputError(f"{type(model).__name__} has no features()/head(): feature-space detectors "
                         "need a classifier split into a feature extractor and a head")
    was_training = model.training
    model.eval()
    device = model_device(model)
    feats, logits = [], []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            if "features" in uses:
                f = model.features(xb)
                feats.append(f.float().cpu())
                if "logits" in uses:
                    logits.append(model.head(f).float().cpu())
            else:
                logits.append(model(xb).float().cpu())
    finally:
        model.train(was_training)
    out = {}
    if "features" in uses:
        out["features"] = torch.cat(feats).numpy()
    if "logits" in uses:
        out["logits"] = torch.cat(logits).numpy()
    return out


def check_outputs(name: str, arr, n: int | None = None) -> np.ndarray:
    """Validate a (N, D) array of model outputs; return it as float64."""
    if arr is None:
        raise InputError(f"{name} are required by this detector")
    a = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"{name}: expected a non-empty (N, D) array, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise InputError(f"{name}: expected {n} rows, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: contain NaN or Inf values")
    return a


def logsumexp(a: np.ndarray, axis: int = 1) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def softmax(a: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats, with 0 log 0 = 0."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def sign_step(grad: torch.Tensor) -> torch.Tensor:
    """+1 where grad >= 0, else -1: the reference ODIN / Mahalanobis codes' sign (0 maps to +1)."""
    return (grad >= 0).to(grad.dtype) * 2 - 1


def select_best(rows: list[dict]) -> dict:
    """The grid point with the lowest FPR at 95 % TPR; ties broken by higher AUROC, then grid order."""
    if not rows:
        raise ValueError("empty tuning grid")
    return min(enumerate(rows), key=lambda ir: (ir[1]["fpr95"], -ir[1]["auroc"], ir[0]))[1]


def grid_row(params: dict, scores_in: np.ndarray, scores_out: np.ndarray) -> dict:
    m = ood_metrics(scores_in, scores_out)
    return {**params, "fpr95": m["fpr95"], "auroc": m["auroc"]}


TUNING_CRITERION = "lowest FPR at 95% TPR, ties: higher AUROC"


def grid_points(param_grid: dict) -> list[dict]:
    """Every point of a ``{name: values}`` grid as ``{name: float}``, the first name varying slowest."""
    names = list(param_grid)
    return [dict(zip(names, (float(v) for v in vals))) for vals in itertools.product(*param_grid.values())]


def select_point(points: list[dict], grid_in: np.ndarray, grid_out: np.ndarray) -> dict:
    """The one search behind every tuning protocol: the grid point (rows of ``grid_in`` /
    ``grid_out``, scores of in-distribution / OOD tuning images, in ``points`` order) with the lowest
    FPR at 95 % TPR, ties by higher AUROC then grid order; with its metrics and the whole grid."""
    rows = [grid_row(p, gi, go) for p, gi, go in zip(points, grid_in, grid_out)]
    best = select_best(rows)
    return {**{k: best[k] for k in points[0]}, "fpr95": best["fpr95"], "auroc": best["auroc"],
            "criterion": TUNING_CRITERION, "grid": rows}


class PostHocDetector(Detector):
    """Base of detectors that score a trained classifier (see the module docstring).

    Subclasses set ``uses`` (a tuple drawn from ``("features", "logits")``) and implement
    ``_score_outputs(**outputs)``; those that learn statistics also implement
    ``_fit_outputs(y=..., **outputs)``.
    """

    uses: tuple[str, ...] = ("logits",)
    needs_labels: bool = False

    def __init__(self, model: nn.Module, batch_size: int = 1000):
        self.model = model
        self.batch_size = batch_size

    @property
    def needs_images(self) -> bool:
        """True when scoring needs the images, not only cached model outputs."""
        return False

    def _check_model(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise InputError(f"{type(self).__name__}: model must be a torch nn.Module, got {type(self.model).__name__}")
        if self.batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {self.batch_size}")

    def outputs(self, x) -> dict[str, np.ndarray]:
        """The model outputs this detector uses, for images ``x``."""
        from .base import check_images
        self._check_model()
        return model_outputs(self.model, check_images(x, shape=self.input_shape()), self.uses, self.batch_size)

    # -- fit / score on images -------------------------------------------------------------
    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._check_model()
        if self.needs_labels and y is None:
            raise InputError(f"{type(self).__name__} needs class labels: fit(x_train, y_train)")
        outs = model_outputs(self.model, x, self.uses, self.batch_size)
        self._fit_outputs(y=None if y is None else y.numpy(), **self._collect(**outs))

    def _score(self, x: torch.Tensor) -> np.ndarray:
        self._check_model()
        return self._score_outputs(**self._collect(**model_outputs(self.model, x, self.uses, self.batch_size)))

    # -- fit / score on precomputed outputs ------------------------------------------------
    def fit_outputs(self, *, features=None, logits=None, y=None) -> "PostHocDetector":
        """Fit on precomputed model outputs of the training images (see ``uses``)."""
        got = self._collect(features, logits)
        if self.needs_labels:
            if y is None:
                raise InputError(f"{type(self).__name__} needs class labels: fit_outputs(..., y=y_train)")
        if y is not None:
            y = np.asarray(y)
            n = len(next(iter(got.values())))
            if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
                raise InputError(f"labels: expected {n} integer labels, got shape {y.shape} dtype {y.dtype}")
            if len(y) and y.min() < 0:
                raise InputError("labels: in-distribution labels must be >= 0")
        self._fit_outputs(y=y, **got)
        self.fitted_ = True
        # threshold_: from (up to 2,000 of) these training outputs, scored when first asked for
        keep = np.random.default_rng(0).permutation(len(next(iter(got.values()))))[:N_THRESHOLD]
        self._threshold_outputs = {k: v[keep] for k, v in got.items()}
        self._threshold_images, self._threshold = None, None
        return self

    def _training_scores(self) -> np.ndarray | None:
        outputs = getattr(self, "_threshold_outputs", None)
        if outputs is not None and not self.needs_images:
            return self.score_outputs(**outputs)
        return super()._training_scores()

    def score_outputs(self, *, features=None, logits=None) -> np.ndarray:
        """Scores (higher = more OOD) from precomputed model outputs."""
        self.check_fitted()
        if self.needs_images:
            raise InputError(f"{type(self).__name__} with these settings needs the images: call score(x)")
        return np.asarray(self._score_outputs(**self._collect(features, logits)), dtype=np.float64).reshape(-1)

    def _collect(self, features=None, logits=None) -> dict[str, np.ndarray]:
        """The outputs in ``uses``, validated, as float64 (scores are computed in float64)."""
        given = {"features": features, "logits": logits}
        got = {k: check_outputs(k, given[k]) for k in self.uses}
        lengths = {len(v) for v in got.values()}
        if len(lengths) > 1:
            raise InputError(f"outputs have different numbers of rows: { {k: len(v) for k, v in got.items()} }")
        return got

    def _fit_outputs(self, y: np.ndarray | None = None, **outputs: np.ndarray) -> None:
        """Learn statistics from training outputs; nothing to learn by default."""

    def _score_outputs(self, **outputs: np.ndarray) -> np.ndarray:
        # Only detectors that need the images (MC passes, input pre-processing) lack this, and
        # score_outputs refuses them before getting here.
        raise InputError(f"{type(self).__name__} cannot score precomputed outputs: call score(x)")


class TunedDetector(PostHocDetector):
    """A post-hoc detector whose hyper-parameters ``oodgen bench`` tunes: it declares
    :attr:`param_grid` ``{constructor name: values}`` and scores the whole grid in one pass
    (:meth:`grid_scores`); one search, :func:`select_point`, serves every tuning protocol."""

    param_grid: dict = {}

    @classmethod
    def for_tuning(cls, model: nn.Module, features: np.ndarray | None = None,
                   y: np.ndarray | None = None) -> "TunedDetector":
        """An instance ready for :meth:`grid_scores`: fitted on the training ``features`` / labels
        ``y`` when it learns statistics."""
        det = cls(model)
        if cls.needs_labels or "features" in cls.uses:
            det.fit_outputs(features=features, y=y)
        return det

    @abc.abstractmethod
    def grid_scores(self, x, points: list[dict] | None = None) -> np.ndarray:
        """Scores of images ``x`` at every point of :attr:`param_grid` (or at ``points``), shape
        (points, N), computed in one vectorised pass where the method allows."""
