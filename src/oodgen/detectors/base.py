"""The detector contract shared by every method (scikit-learn / PyOD style).

* The constructor only stores keyword hyper-parameters.
* ``fit(x, y)`` learns from in-distribution training data and returns ``self``; what it learns
  ends in ``_``.
* ``score(x)`` returns a float64 numpy array of shape (N,), **higher = more OOD**; calling it
  before ``fit`` raises :class:`NotFittedError`.
* ``threshold_`` is the score at which 95 % of in-distribution images score at or below it (the
  95 %-TPR operating point of every table here): from up to 2,000 of the training images by default,
  computed when first needed, or from held-out in-distribution images with
  :meth:`Detector.calibrate_threshold` (better: training images score lower than new ones).
  ``predict(x)`` labels images with it, PyOD's way: 1 = OOD, 0 = in-distribution.
  Detectors with a classifier give its class with ``predict_class(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import abc

import numpy as np
import torch

from ..generate import NotFittedError


class InputError(ValueError):
    """Input images have the wrong shape, dtype or range, or contain NaN/Inf."""


DEFAULT_SHAPE = (1, 28, 28)
THRESHOLD_TPR = 0.95          # fraction of in-distribution images at or below threshold_
N_THRESHOLD = 2000            # training images kept by fit for the default threshold_


@dataclass(frozen=True)
class BenchInfo:
    """How ``oodgen bench`` runs and reports a detector, declared on its class (``bench_info``): the
    bench keeps no lists of its own, so a registered detector with this is benchmarked and tabled.

    display : its column name in the tables.
    table : ``"table1"`` (the paper's Table 1), ``"table2"`` (Table 2) or ``"extra"``.
    consumes : what the bench feeds it: ``"outputs"`` (cached penultimate features / logits of the
        plain classifier: ``fit_outputs`` / ``score_outputs``), ``"mc"`` (the MC-dropout moments:
        ``from_moments(mean_p, mean_entropy)``), ``"images"`` (``for_bench(seed)``, then fit / score
        on images; no classifier), ``"tuned"`` (an input-pre-processing detector whose
        hyper-parameters are tuned by the bench's protocols) or ``"trains"`` (trains its own
        classifier).
    score : the score in words (recorded in every result).
    fair_variant : for ``"tuned"``: also run ``<name>-fair``, tuned without test OOD data.
    """

    display: str
    table: str
    consumes: str
    score: str
    fair_variant: bool = False

    @property
    def classifier_free(self) -> bool:
        return self.consumes == "images"


def image_shape_of(model, default=DEFAULT_SHAPE) -> tuple[int, int, int] | None:
    """The (C, H, W) a network takes (its ``image_shape`` attribute), else ``default``."""
    shape = getattr(model, "image_shape", None)
    return tuple(shape) if shape is not None else default


def check_images(x, name: str = "input", *, allow_outside_unit: bool = True,
                 shape: tuple[int, int, int] | None = DEFAULT_SHAPE) -> torch.Tensor:
    """Validate a batch of images and return it as float32 (N, C, H, W).

    ``shape`` is the expected (C, H, W) (default the paper's 1 x 28 x 28); (N, H, W) is read as
    one channel.  ``shape=None`` accepts any (N, C, H, W) with 1-4 channels (a new training set)."""
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise InputError(f"{name}: images must be numeric, got dtype {x.dtype}")
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    elif not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.dtype in (torch.complex64, torch.complex128):
        raise InputError(f"{name}: complex images are not supported")
    x = x.float()
    if x.ndim == 3 and (shape is None or shape[0] == 1):
        x = x.unsqueeze(1)
    if shape is None:
        if x.ndim != 4 or not 1 <= x.shape[1] <= 4:
            raise InputError(f"{name}: expected images of shape (N, C, H, W) with C = 1 (grey) or 3 (colour), "
                             f"or (N, H, W), got {tuple(x.shape)}")
    elif x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        c, h, w = shape
        also = f" or (N, {h}, {w})" if c == 1 else ""
        raise InputError(f"{name}: expected images of shape (N, {c}, {h}, {w}){also}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{name}: no images (empty batch)")
    finite = torch.isfinite(x)
    if not finite.all():
        bad = int((~finite).flatten(1).any(1).sum())
        raise InputError(f"{name}: {bad} image(s) contain NaN or Inf values")
    if not allow_outside_unit and (x.min() < 0 or x.max() > 1):
        raise InputError(f"{name}: pixel values must be in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def check_labels(y, n: int, name: str = "labels") -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise InputError(f"{name}: class labels must be integers, got {y.dtype}")
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{name}: expected shape ({n},), got {tuple(y.shape)}")
    if len(y) and y.min() < 0:
        raise InputError(f"{name}: in-distribution labels must be >= 0 (OOD samples are -1 and cannot be fitted on)")
    return y.long()


class Detector(abc.ABC):
    """Base class: subclasses implement ``_fit`` and ``_score`` (abstract, so a detector that
    forgets one cannot be instantiated)."""

    def input_shape(self) -> tuple[int, int, int] | None:
        """The (C, H, W) this detector takes: its model's ``image_shape``, else 1 x 28 x 28."""
        return image_shape_of(getattr(self, "model", None))

    def _fit_shape(self) -> tuple[int, int, int] | None:
        return self.input_shape()

    def _log(self, msg: str) -> None:
        """Progress messages of detectors that train, printed when their ``verbose`` is set."""
        if getattr(self, "verbose", False):
            print(msg, flush=True)

    def fit(self, x, y=None) -> "Detector":
        x = check_images(x, "fit input", shape=self._fit_shape())
        y = check_labels(y, len(x)) if y is not None else None
        self._fit(x, y)
        self.fitted_ = True
        # threshold_ is computed from these when first asked for (scoring them costs nothing until then)
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:N_THRESHOLD]
        self._threshold_images = x[keep].detach().cpu().clone()
        self._threshold = None
        return self

    def calibrate_threshold(self, x_in, tpr: float = THRESHOLD_TPR) -> "Detector":
        """Set :attr:`threshold_` from in-distribution images ``x_in`` (ideally held out from
        ``fit``): the ``tpr`` quantile of their scores, so that ``tpr`` of them are kept."""
        if not 0.0 < tpr < 1.0:
            raise ValueError(f"tpr must be in (0, 1), got {tpr}")
        from ..metrics import threshold_at_tpr
        self._threshold = float(threshold_at_tpr(self.score(x_in), tpr))
        self._threshold_images = None
        return self

    @property
    def threshold_(self) -> float:
        """Scores above it are called OOD (see the module docstring); set by :meth:`fit` (lazily, from
        training images) or :meth:`calibrate_threshold`."""
        self.check_fitted()
        if getattr(self, "_threshold", None) is None:
            scores = self._training_scores()
            if scores is None:
                raise NotFittedError(f"{type(self).__name__}: no threshold; call calibrate_threshold(x_in)")
            from ..metrics import threshold_at_tpr
            self._threshold = float(threshold_at_tpr(scores, THRESHOLD_TPR))
        return self._threshold

    def _training_scores(self) -> np.ndarray | None:
        """Scores of the training images kept by :meth:`fit` (the default :attr:`threshold_`)."""
        images = getattr(self, "_threshold_images", None)
        return None if images is None else self.score(images)

    def predict(self, x) -> np.ndarray:
        """OOD labels, int64 (N,): 1 where ``score(x) > threshold_`` (OOD), else 0 (PyOD's contract)."""
        t = self.threshold_
        return (self.score(x) > t).astype(np.int64)

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless :meth:`fit` has run (the one fitted-check)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(x_train, y_train) first")

    def score(self, x) -> np.ndarray:
        """OOD scores of images ``x``, float64 (N,), higher = more OOD.

        (Not scikit-learn's ``score(X, y)``, a goodness of fit: here it is the per-image OOD score,
        as ``decision_function`` is in PyOD, and it has that name too.)"""
        self.check_fitted()
        x = check_images(x, "score input", shape=self.input_shape())
        out = np.asarray(self._score(x), dtype=np.float64).reshape(-1)
        return out

    @abc.abstractmethod
    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Learn from validated training images (and labels, when given)."""

    @abc.abstractmethod
    def _score(self, x: torch.Tensor) -> np.ndarray:
        """Scores of validated images, higher = more OOD."""

    def get_params(self) -> dict:
        import inspect
        sig = inspect.signature(type(self).__init__)
        # A hyper-parameter named like a method (``score``) is stored as ``<name>_rule``.
        out = {}
        for k in sig.parameters:
            if k == "self":
                continue
            v = getattr(self, k, None)
            if callable(v) and hasattr(self, f"{k}_rule"):
                v = getattr(self, f"{k}_rule")
            out[k] = v
        return out

    def set_params(self, **params) -> "Detector":
        """Set hyper-parameters by their constructor names (scikit-learn's protocol); returns self.
        A fitted detector must be fitted again for most changes to take effect."""
        known = self.get_params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown parameter(s) {unknown}; it has {sorted(known)}")
        for k, v in params.items():
            attr = f"{k}_rule" if callable(getattr(type(self), k, None)) else k
            setattr(self, attr, v)
        return self

    def decision_function(self, x) -> np.ndarray:
        """PyOD's name for :meth:`score`: higher = more OOD."""
        return self.score(x)
