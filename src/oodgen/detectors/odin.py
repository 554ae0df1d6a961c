"""ODIN: temperature scaling and input pre-processing (Liang, Li & Srikant, ICLR 2018).

Score (higher = more OOD)::

    x'   = x - eps * sign( grad_x  CE(f(x) / T, y_hat) ),   y_hat = argmax_k f_k(x)
    s(x) = 1 - max_k softmax(f(x') / T)_k

The step lowers the cross-entropy of the predicted class, i.e. raises its tempered softmax
probability; in-distribution inputs gain more from it than OOD inputs.  The paper's score
max_k softmax(f(x')/T) is flipped into an OOD score.  As in the reference code
(``facebookresearch/odin``) ``sign`` maps a zero gradient to +1, there is no clipping of x'
to [0, 1], and no division by a per-channel std (our images are not normalised).

Hyper-parameters (defaults = the reference code's defaults):

* ``temperature`` T = 1000;
* ``eps`` = 0.0014 (perturbation magnitude; ``eps=0`` scores from cached logits alone);
* ``batch_size`` = 500.

Tuning (:func:`tune_odin`) picks (T, eps) with the lowest FPR at 95 % TPR (ties: higher
AUROC, then grid order) on a validation pair (in-distribution images, OOD images); the
paper's grid is :data:`ODIN_TEMPERATURES` x :data:`ODIN_EPSILONS` (21 values in [0, 0.004]).
Two protocols use it (``oodgen bench --tuning``):

* ``test-ood`` (the ODIN paper's and the usual protocol): tuned per OOD set on 1,000 held-out
  images *of that test OOD set* against in-distribution validation images, and evaluated on
  the rest of the OOD set - optimistic, since it sees the test distribution;
* ``fair``: tuned once on in-distribution validation images against outliers that need no
  knowledge of the test OOD sets (uniform noise + Type I perturbations of validation images).

Reference: S. Liang, Y. Li, R. Srikant, "Enhancing the reliability of out-of-distribution
image detection in neural networks", ICLR 2018.  Table 1 of the OODGen paper ("ODIN").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import check_images, image_shape_of, BenchInfo
from .posthoc import TunedDetector, grid_points, model_device, select_point, sign_step, softmax

ODIN_TEMPERATURES: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
ODIN_EPSILONS: tuple[float, ...] = tuple(float(e) for e in np.round(np.linspace(0.0, 0.004, 21), 6))


def _check_grid(temperatures: Sequence[float], epsilons: Sequence[float]) -> None:
    if len(temperatures) == 0 or len(epsilons) == 0:
        raise ValueError("ODIN: empty temperature or epsilon grid")
    if any(not float(t) > 0 for t in temperatures):
        raise ValueError(f"ODIN: temperatures must be > 0, got {list(temperatures)}")
    if any(not float(e) >= 0 for e in epsilons):
        raise ValueError(f"ODIN: perturbation magnitudes eps must be >= 0, got {list(epsilons)}")


def odin_grid_scores(model: nn.Module, x, temperatures: Sequence[float] = ODIN_TEMPERATURES,
                     epsilons: Sequence[float] = ODIN_EPSILONS, batch_size: int = 500) -> np.ndarray:
    """ODIN scores of images ``x`` for every (T, eps) pair, shape (len(T), len(eps), N), float64.

    One backward pass per temperature and one forward pass per (T, eps > 0) pair; eps = 0
    reuses the clean logits.
    """
    _check_grid(temperatures, epsilons)
    x = check_images(x, "ODIN input", shape=image_shape_of(model))
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = np.empty((len(temperatures), len(epsilons), len(x)), dtype=np.float64)
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device).requires_grad_(True)
            logits = model(xb)
            y_hat = logits.argmax(1)
            clean = logits.detach().double().cpu().numpy()
            for i, t in enumerate(temperatures):
                t = float(t)
                loss = F.cross_entropy(logits / t, y_hat, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xb, retain_graph=i + 1 < len(temperatures))
                step = sign_step(grad)
                for j, eps in enumerate(epsilons):
                    if float(eps) == 0.0:
                        lo = clean
                    else:
                        with torch.no_grad():
                            lo = model(xb.detach() - float(eps) * step).double().cpu().numpy()
                    out[i, j, start:start + len(xb)] = 1.0 - softmax(lo / t).max(axis=1)
    finally:
        model.train(was_training)
    return out


def select_odin(grid_in: np.ndarray, grid_out: np.ndarray, temperatures: Sequence[float] = ODIN_TEMPERATURES,
                epsilons: Sequence[float] = ODIN_EPSILONS) -> dict:
    """Choose (T, eps) from precomputed :func:`odin_grid_scores` of validation in/out images."""
    return select_point(grid_points({"temperature": temperatures, "eps": epsilons}),
                        grid_in.reshape(-1, grid_in.shape[-1]), grid_out.reshape(-1, grid_out.shape[-1]))


def tune_odin(model: nn.Module, x_in_val, x_out_val, grid_T: Sequence[float] = ODIN_TEMPERATURES,
              grid_eps: Sequence[float] = ODIN_EPSILONS, batch_size: int = 500) -> dict:
    """Tune ODIN's temperature and perturbation magnitude by FPR at 95 % TPR.

    Parameters
    ----------
    model : the trained classifier.
    x_in_val, x_out_val : validation in-distribution and OOD images (N, 1, 28, 28).
    grid_T, grid_eps : the search grid (default: the ODIN paper's).

    Returns
    -------
    dict with ``temperature``, ``eps`` (the choice), its ``fpr95`` / ``auroc`` on the
    validation pair, and ``grid`` (every grid point's FPR95 and AUROC).
    """
    g_in = odin_grid_scores(model, x_in_val, grid_T, grid_eps, batch_size)
    g_out = odin_grid_scores(model, x_out_val, grid_T, grid_eps, batch_size)
    return select_odin(g_in, g_out, grid_T, grid_eps)


class ODIN(TunedDetector):
    """Tempered max softmax after an input perturbation step (see the module docstring)."""

    bench_info = BenchInfo("ODIN", "table1", "tuned", "1 - max softmax(f(x')/T), input perturbation eps", fair_variant=True)

    uses = ("logits",)
    param_grid = {"temperature": ODIN_TEMPERATURES, "eps": ODIN_EPSILONS}

    def __init__(self, model: nn.Module, temperature: float = 1000.0, eps: float = 0.0014,
                 batch_size: int = 500):
        self.model = model
        self.temperature = temperature
        self.eps = eps
        self.batch_size = batch_size

    @property
    def needs_images(self) -> bool:
        return float(self.eps) != 0.0

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._check_model()
        _check_grid([self.temperature], [self.eps])

    def _score(self, x: torch.Tensor) -> np.ndarray:
        self._check_model()
        return odin_grid_scores(self.model, x, [self.temperature], [self.eps], self.batch_size)[0, 0]

    def grid_scores(self, x, points: list[dict] | None = None) -> np.ndarray:
        """(points, N): the whole (T, eps) grid in one pass per batch (one backward per T), else
        each given point."""
        self._check_model()
        if points is None:
            g = odin_grid_scores(self.model, x, self.param_grid["temperature"], self.param_grid["eps"], self.batch_size)
            return g.reshape(-1, g.shape[-1])
        return np.stack([odin_grid_scores(self.model, x, [p["temperature"]], [p["eps"]], self.batch_size)[0, 0]
                         for p in points])

    def _score_outputs(self, logits: np.ndarray) -> np.ndarray:
        _check_grid([self.temperature], [self.eps])
        return 1.0 - softmax(logits / float(self.temperature)).max(axis=1)
