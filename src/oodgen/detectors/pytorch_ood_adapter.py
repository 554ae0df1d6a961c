"""Run any detector of the ``pytorch-ood`` library on our classifier (optional).

``pytorch-ood`` (Kirchheim et al., CVPR-W 2022) is *not* a dependency of oodgen: it is imported
only when :meth:`PytorchOOD.fit` runs, and a clear ImportError says how to install it
otherwise.  It already uses our convention (``predict`` returns outlier scores, higher = more
OOD), so its scores are passed through unchanged, as float64.

Parameters
----------
model : the trained classifier (``forward`` = logits, ``features`` = penultimate layer).
detector : the class name in ``pytorch_ood.detector`` (``"MaxSoftmax"``, ``"ODIN"``,
    ``"EnergyBased"``, ``"Mahalanobis"``, ``"KNN"``, ``"ViM"``, ...).
on : ``"logits"`` (default) gives the detector the whole classifier; ``"features"`` gives it
    the feature extractor ``model.features`` (what pytorch-ood's Mahalanobis, KNN and ViM
    expect).
options : keyword arguments of the pytorch-ood detector (e.g. ``{"eps": 0.002}``; ViM's
    ``w``/``b`` and its ``d``).
batch_size : images per ``fit`` / ``predict`` batch (500).

Example::

    PytorchOOD(model, "EnergyBased").fit(x_train, y_train).score(x_test)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Detector, InputError
from .posthoc import model_device


class _Features(nn.Module):
    """The classifier's feature extractor as a module of its own."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def _import_detectors():
    try:
        import pytorch_ood.detector as detectors
    except ImportError:
        raise ImportError("the pytorch-ood adapter needs the optional package pytorch-ood "
                          "(pip install pytorch-ood); oodgen's own detectors do not") from None
    return detectors


class PytorchOOD(Detector):
    """A ``pytorch_ood.detector`` class wrapped in oodgen's fit/score contract."""

    def __init__(self, model: nn.Module, detector: str = "MaxSoftmax", on: str = "logits",
                 options: dict | None = None, batch_size: int = 500):
        self.model = model
        self.detector = detector
        self.on = on
        self.options = options
        self.batch_size = batch_size

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        detectors = _import_detectors()
        if self.on not in ("logits", "features"):
            raise ValueError(f"PytorchOOD: on must be 'logits' or 'features', got {self.on!r}")
        cls = getattr(detectors, self.detector, None)
        if cls is None:
            raise InputError(f"pytorch_ood.detector has no detector {self.detector!r}")
        net = self.model if self.on == "logits" else _Features(self.model)
        self.model.eval()
        self.detector_ = cls(net, **(self.options or {}))
        labels = y if y is not None else torch.zeros(len(x), dtype=torch.long)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=self.batch_size)
        self.detector_.fit(loader, device=model_device(self.model))

    def _score(self, x: torch.Tensor) -> np.ndarray:
        device = model_device(self.model)
        self.model.eval()
        out = [self.detector_.predict(x[i:i + self.batch_size].to(device)).detach().double().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy()
