"""Every baseline detector by name.

``DETECTORS[name](model, **hyper_parameters)`` builds a detector around a trained classifier
``model`` (for ``"confident"``, ``model`` is the *initial* classifier to train jointly with its
GAN, for ``"vos"`` and its control ``"vos-alpha0"`` the initial classifier to train with virtual
outliers; ``None`` for a fresh Fig. 6c CNN).  The paper's own method, which trains its own
n+1 classifier and CVAE, is :class:`oodgen.detectors.oodgen.OODGen`.

The optional pytorch-ood adapter (:mod:`oodgen.detectors.pytorch_ood_adapter`) is not listed:
it needs a package oodgen does not depend on.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .base import Detector
from .confident import ConfidentClassifier
from .energy import Energy
from .knn import KNN
from .mahalanobis import Mahalanobis
from .max_logit import MaxLogit
from .mc_dropout import MCDropout
from .msp import MaxSoftmax
from .mutual_info import MutualInformation
from .odin import ODIN
from .pixel_knn import PixelKNN
from .posthoc import PostHocDetector
from .vim import ViM
from .vos import VOS, VOSControl

# The order is the benchmark's column order within each table (BenchInfo.table of each class).
DETECTORS: dict[str, Callable[..., Detector]] = {
    "confident": ConfidentClassifier,
    "odin": ODIN,
    "mahalanobis": Mahalanobis,
    "msp": MaxSoftmax,
    "mc-dropout": MCDropout,
    "mutual-info": MutualInformation,
    "energy": Energy,
    "max-logit": MaxLogit,
    "knn": KNN,
    "vim": ViM,
    "pixel-knn": PixelKNN,
    "vos": VOS,
    "vos-alpha0": VOSControl,
}

#: Detectors that score a trained classifier without training anything.
POST_HOC = tuple(name for name, cls in DETECTORS.items() if issubclass(cls, PostHocDetector))


def make_detector(name: str, model: nn.Module | None, **kwargs) -> Detector:
    """Build the detector ``name`` around ``model`` with hyper-parameters ``kwargs``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")
    try:
        return DETECTORS[name](model, **kwargs)
    except TypeError as exc:
        raise ValueError(f"detector {name!r}: {exc}") from None
