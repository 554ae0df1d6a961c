"""Boundary-outlier generators: Type I (off-manifold) and Type II (on-manifold)."""
from .off_manifold import (BETA_RANGES, NULLSPACE_METHODS, beta_range, decoder_jacobian,
                           off_manifold_samples, perturb, rref_null_direction, uniform_null_direction)
from .on_manifold import RADIUS_MODES, ClassEllipsoids, NotFittedError, encode_means, on_manifold_samples

__all__ = ["BETA_RANGES", "NULLSPACE_METHODS", "RADIUS_MODES", "ClassEllipsoids", "NotFittedError",
           "beta_range", "decoder_jacobian", "encode_means", "off_manifold_samples", "on_manifold_samples",
           "perturb", "rref_null_direction", "uniform_null_direction"]
