"""How well a set of generated outliers covers the boundary of the sphere toy's classes.

For any generator's samples (N, 3), without labels:

* ``rim``: the on-manifold boundary.  ``n_rim`` points evenly spaced on each class's boundary
  circle (angle ``cap_angle_deg`` from its centre); a rim point is covered when some sample
  near the sphere (| |x| - 1 | <= ``max_offset``) points within ``tol_deg`` of it.
* ``shell``: the off-manifold boundary.  ``n_cap`` directions spread evenly (a Fibonacci
  spiral) over each class's cap; a direction is covered when some sample off the sphere
  (``min_offset`` <= | |x| - 1 | <= ``max_offset``, above or below) points within ``tol_deg``
  of it.
* ``radial_mean``, ``radial_std``: mean and standard deviation of the signed distance from the
  sphere surface, |x| - 1, over all samples; ``radial_abs_mean``: mean of | |x| - 1 |.

Coverages are fractions in [0, 1], averaged over the two classes.  Defaults: ``tol_deg`` 5
(the rim circle is about 208 degrees of arc long, so at least 21 evenly spread samples are
needed to cover it), ``max_offset`` 0.5 (the off-sphere test band), ``min_offset`` 0.05.
Compare generators with the same number of samples: coverage grows with it.
"""
from __future__ import annotations

import math

import numpy as np

from .sphere import CAP_ANGLE_DEG, CENTRES, tangent_basis


def rim_points(centre: np.ndarray, cap_angle_deg: float = CAP_ANGLE_DEG, n: int = 360) -> np.ndarray:
    """``n`` unit vectors evenly spaced on the circle at ``cap_angle_deg`` from ``centre``."""
    t = math.radians(cap_angle_deg)
    phi = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    u, v = tangent_basis(centre)
    return math.cos(t) * np.asarray(centre) + math.sin(t) * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)


def cap_directions(centre: np.ndarray, cap_angle_deg: float = CAP_ANGLE_DEG, n: int = 400) -> np.ndarray:
    """``n`` unit vectors spread evenly (equal-area Fibonacci spiral) over the cap around ``centre``."""
    i = np.arange(n) + 0.5
    cos_t = 1.0 - (1.0 - math.cos(math.radians(cap_angle_deg))) * i / n
    sin_t = np.sqrt(1.0 - cos_t ** 2)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    u, v = tangent_basis(centre)
    return cos_t[:, None] * np.asarray(centre) + sin_t[:, None] * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)


def _covered(targets: np.ndarray, directions: np.ndarray, tol_deg: float) -> np.ndarray:
    if len(directions) == 0:
        return np.zeros(len(targets), dtype=bool)
    return (targets @ directions.T).max(1) >= math.cos(math.radians(tol_deg))


def boundary_coverage(samples, tol_deg: float = 5.0, n_rim: int = 360, n_cap: int = 400,
                      max_offset: float = 0.5, min_offset: float = 0.05,
                      cap_angle_deg: float = CAP_ANGLE_DEG) -> dict[str, float]:
    """Boundary coverage and radial spread of generated samples (see the module docstring)."""
    pts = np.asarray(samples, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"samples must have shape (N, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("samples contain NaN/Inf values")
    if len(pts) == 0:
        raise ValueError("samples are empty")
    norms = np.linalg.norm(pts, axis=1)
    offset = norms - 1.0
    dirs = pts / np.clip(norms, 1e-12, None)[:, None]
    near = np.abs(offset) <= max_offset
    off = near & (np.abs(offset) >= min_offset)
    rim = [_covered(rim_points(c, cap_angle_deg, n_rim), dirs[near], tol_deg).mean() for c in CENTRES]
    shell = [_covered(cap_directions(c, cap_angle_deg, n_cap), dirs[off], tol_deg).mean() for c in CENTRES]
    return {
        "rim": float(np.mean(rim)),
        "shell": float(np.mean(shell)),
        "rim_per_class": [float(r) for r in rim],
        "shell_per_class": [float(s) for s in shell],
        "radial_mean": float(offset.mean()),
        "radial_std": float(offset.std()),
        "radial_abs_mean": float(np.abs(offset).mean()),
        "n_samples": int(len(pts)),
        "tol_deg": float(tol_deg),
    }
