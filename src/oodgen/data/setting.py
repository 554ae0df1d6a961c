"""One run's data as a typed object: the splits, the OOD sets it is evaluated on, the Sphere-OOD radius
and where it all came from.  ``oodgen run``, ``oodgen bench`` and the experiments read a setting
through :func:`oodgen.run.load_setting`, which returns this."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .datasets import ImageSet


@dataclass
class DataSetting:
    """Training / validation / test images ((N, C, H, W) float in [0, 1]) and integer labels, the names
    of the OOD sets (loaded one at a time when evaluated; a custom run's ``--ood`` sets are in
    ``user_ood``, already checked), the Sphere-OOD radius, and ``info``: a custom run's provenance (its
    classes, image shape, file digests, test split; empty for a built-in setting)."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    sphere_radius: float
    ood_names: list[str]
    info: dict = field(default_factory=dict)
    user_ood: dict[str, ImageSet] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        return tuple(int(v) for v in self.x.shape[1:])

    @property
    def n_classes(self) -> int:
        """The in-distribution classes: a custom run's named ones, else 1 + the largest training label."""
        return len(self.info["classes"]) if "classes" in self.info else int(self.y.max()) + 1

    def describe(self) -> str:
        return (f"train {len(self.x)} / val {len(self.x_val)} / test {len(self.x_test)} images, {self.n_classes} "
                f"classes; OOD sets: {', '.join(self.ood_names)}")
