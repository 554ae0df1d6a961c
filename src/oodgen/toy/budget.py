"""The 3-D toy's budgets: how many points and steps each part of :mod:`oodgen.toy.demo` uses."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    n_train: int
    n_val: int
    n_test: int                # in-distribution test points, and points of each OOD set
    cvae_steps: int
    classifier_steps: int
    gan_steps: int
    pool_size: int             # Type I and Type II outliers per regeneration, each
    regen_every: int           # classifier steps between outlier-pool regenerations
    n_coverage: int            # generated samples per method scored by coverage (and plotted)
    map_resolution: int        # decision-map pixels per 180 degrees of latitude


BUDGETS = {
    "default": Budget(n_train=2000, n_val=500, n_test=1000, cvae_steps=1200, classifier_steps=1500,
                      gan_steps=2000, pool_size=1000, regen_every=300, n_coverage=1000, map_resolution=180),
    "tiny": Budget(n_train=300, n_val=100, n_test=200, cvae_steps=60, classifier_steps=60, gan_steps=60,
                   pool_size=150, regen_every=30, n_coverage=200, map_resolution=30),
}
