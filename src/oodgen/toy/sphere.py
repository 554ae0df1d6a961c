"""The 3-D toy data set of the paper's appendix A: two classes on the unit sphere.

The paper samples "over the surface of a unit sphere from its diagonally opposite quadrants".
Here each class is a spherical cap, which gives a round boundary whose coverage can be measured
(:mod:`oodgen.toy.coverage`):

* class 0: the cap of angular radius ``CAP_ANGLE_DEG`` around c0 = (1, 1, 1) / sqrt(3), the
  largest cap inside the octant x, y, z > 0;
* class 1: the same cap around c1 = -c0, inside the diagonally opposite octant x, y, z < 0.

Points are uniform on the cap (uniform cos(angle) and azimuth).  Out-of-distribution test sets
(label -1, as everywhere in the project):

* ``off_sphere``: uniform directions at radii in [0.5, 0.9] u [1.1, 1.5];
* ``off_sphere_near``: the same radii, directions inside one of the two caps (points just above
  or below the classes, the case Type I outliers are meant for);
* ``on_sphere_outside``: on the unit sphere, more than ``margin_deg`` outside both caps.

Every set is seeded: the same ``seed`` gives the same points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CAP_ANGLE_DEG = math.degrees(math.acos(math.sqrt(2.0 / 3.0)))     # 35.26 deg: the cap inscribed in an octant
CENTRES = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]) / math.sqrt(3.0)
OFF_SPHERE_RADII = ((0.5, 0.9), (1.1, 1.5))
OOD_SETS = ("off_sphere", "off_sphere_near", "on_sphere_outside")


@dataclass(frozen=True)
class PointSet:
    """Points (N, 3) float32 and labels (N,) int64; -1 marks out-of-distribution points."""

    name: str
    points: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, sum((i + 1) * ord(c) for i, c in enumerate(name))]))


def tangent_basis(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal vectors (u, v) spanning the plane perpendicular to the unit vector ``centre``."""
    c = np.asarray(centre, dtype=np.float64)
    helper = np.array([0.0, 0.0, 1.0]) if abs(c[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(c, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(c, u)


def cap_points(centre: np.ndarray, n: int, max_angle_deg: float, rng: np.random.Generator,
               min_angle_deg: float = 0.0) -> np.ndarray:
    """``n`` points uniform (w.r.t. area) on the sphere between two angles from ``centre``."""
    cos_hi = math.cos(math.radians(min_angle_deg))
    cos_lo = math.cos(math.radians(max_angle_deg))
    cos_t = rng.uniform(cos_lo, cos_hi, n)
    sin_t = np.sqrt(np.clip(1.0 - cos_t ** 2, 0.0, None))
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    u, v = tangent_basis(centre)
    c = np.asarray(centre, dtype=np.float64)
    return (cos_t[:, None] * c + sin_t[:, None] * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v))


def uniform_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal((n, 3))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def angle_to_centres(points: np.ndarray) -> np.ndarray:
    """Angle in degrees between each point's direction and each class centre, shape (N, 2)."""
    p = np.asarray(points, dtype=np.float64)
    d = p / np.clip(np.linalg.norm(p, axis=1, keepdims=True), 1e-12, None)
    return np.degrees(np.arccos(np.clip(d @ CENTRES.T, -1.0, 1.0)))


def in_distribution(n: int, seed: int = 0, split: str = "train",
                    cap_angle_deg: float = CAP_ANGLE_DEG) -> PointSet:
    """``n`` labelled points, half of each class (class 0 first), shuffled."""
    if n < 2:
        raise ValueError(f"need at least 2 points (one per class), got n={n}")
    rng = _rng(seed, f"sphere-{split}")
    n0 = n // 2
    pts = np.concatenate([cap_points(CENTRES[0], n0, cap_angle_deg, rng),
                          cap_points(CENTRES[1], n - n0, cap_angle_deg, rng)])
    labels = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
    perm = rng.permutation(n)
    return PointSet(f"sphere-{split}", pts[perm].astype(np.float32), labels[perm])


def _radii(n: int, rng: np.random.Generator) -> np.ndarray:
    # Equal chance of the inner and outer band, uniform within a band.
    (a0, b0), (a1, b1) = OFF_SPHERE_RADII
    inner = rng.random(n) < 0.5
    return np.where(inner, rng.uniform(a0, b0, n), rng.uniform(a1, b1, n))


def ood_points(name: str, n: int, seed: int = 0, cap_angle_deg: float = CAP_ANGLE_DEG,
               margin_deg: float = 10.0) -> PointSet:
    """One of :data:`OOD_SETS`, ``n`` points labelled -1."""
    if name not in OOD_SETS:
        raise ValueError(f"unknown toy OOD set {name!r}; use one of {OOD_SETS}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = _rng(seed, name)
    if name == "off_sphere":
        pts = uniform_directions(n, rng) * _radii(n, rng)[:, None]
    elif name == "off_sphere_near":
        k = rng.integers(0, 2, n)
        dirs = np.stack([cap_points(CENTRES[c], 1, cap_angle_deg, rng)[0] for c in k]) if n else np.zeros((0, 3))
        pts = dirs * _radii(n, rng)[:, None]
    else:
        # Uniform on the part of the sphere more than margin_deg away from both caps: both caps are
        # antipodal, so that is the band between the two caps' enlarged rims.
        lim = cap_angle_deg + margin_deg
        if lim >= 90.0:
            raise ValueError(f"cap angle + margin must be below 90 degrees, got {lim}")
        pts = cap_points(CENTRES[0], n, 180.0 - lim, rng, min_angle_deg=lim)
    return PointSet(name, pts.astype(np.float32), np.full(n, -1, np.int64))
