"""Type II (on-manifold) boundary outliers: decode latent points on each class's Mahalanobis
hyper-ellipsoid that holds 95 % of the encodings (paper section 3.2, eq. 4).

Per class k: mu_k and Sigma_k (regularised by ``ridge`` * I) of the encoder means of that
class's training images, r_k = empirical ``coverage`` quantile of the Mahalanobis distances,
and latent points z = mu_k + L_k (rho u) with L_k the Cholesky factor of Sigma_k and u uniform
on the unit sphere, so that (z - mu_k)^T Sigma_k^-1 (z - mu_k) = rho^2 exactly.  ``radius=``:

``"surface"`` (default, the paper): rho = r_k, on the ellipsoid itself;
``"shell"`` (the authors' code): rho ~ U(r_k, 1.5 r_k), a shell just outside it.

The linear map is uniform in direction, not uniform w.r.t. the ellipsoid's surface area
(Rubinstein 1982 would be); the authors use the same map.
"""
from __future__ import annotations

import numpy as np
import torch

RADIUS_MODES = ("surface", "shell")


class NotFittedError(RuntimeError):
    """A method was called before ``fit``."""


class ClassEllipsoids:
    """Per-class Gaussian fits of latent encodings, with the 95 % Mahalanobis radius.

    Parameters
    ----------
    coverage : fraction of encodings inside the ellipsoid (0.95 in the paper).
    ridge : added to the covariance diagonal (relative to its mean variance) for stability.
    """

    def __init__(self, coverage: float = 0.95, ridge: float = 1e-6):
        self.coverage = coverage
        self.ridge = ridge

    def fit(self, z: torch.Tensor, y: torch.Tensor) -> "ClassEllipsoids":
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {self.coverage}")
        z = z.detach().double().cpu()
        y = y.cpu()
        classes = torch.unique(y)
        self.classes_ = classes
        d = z.shape[1]
        means, chols, radii = [], [], []
        for k in classes:
            zk = z[y == k]
            if len(zk) <= d:
                raise ValueError(f"class {int(k)} has {len(zk)} encodings, need more than the latent dimension {d}")
            mu = zk.mean(0)
            cov = torch.cov(zk.T)
            # Relative ridge plus a tiny absolute floor: a latent unit that never varies (dead ReLU) must
            # not make the covariance singular.
            cov = cov + (self.ridge * cov.diagonal().mean() + 1e-10) * torch.eye(d, dtype=cov.dtype)
            chol = torch.linalg.cholesky(cov)
            diff = torch.linalg.solve_triangular(chol, (zk - mu).T, upper=False)
            dist = diff.norm(dim=0)
            radii.append(float(np.quantile(dist.numpy(), self.coverage)))
            means.append(mu)
            chols.append(chol)
        self.means_ = torch.stack(means)
        self.cholesky_ = torch.stack(chols)
        self.radius_ = torch.tensor(radii, dtype=torch.float64)
        return self

    def _check(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError("ClassEllipsoids is not fitted: call fit(latents, labels) first")

    def _index(self, y: torch.Tensor) -> torch.Tensor:
        idx = torch.searchsorted(self.classes_, y)
        if (idx >= len(self.classes_)).any() or (self.classes_[idx.clamp(max=len(self.classes_) - 1)] != y).any():
            raise ValueError("labels contain a class the ellipsoids were not fitted on")
        return idx

    def mahalanobis(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each latent to its class's mean."""
        self._check()
        y = y.cpu()
        idx = self._index(y)
        diff = (z.double().cpu() - self.means_[idx]).unsqueeze(-1)
        sol = torch.linalg.solve_triangular(self.cholesky_[idx], diff, upper=False)
        return sol.squeeze(-1).norm(dim=1)

    def sample(self, y: torch.Tensor, radius: str = "surface",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent points of classes ``y`` on (``surface``) or just outside (``shell``) the ellipsoid."""
        self._check()
        if radius not in RADIUS_MODES:
            raise ValueError(f"unknown radius mode {radius!r}; use one of {RADIUS_MODES}")
        y = y.cpu()
        idx = self._index(y)
        n, d = len(y), self.means_.shape[1]
        u = torch.randn(n, d, generator=generator, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        rho = self.radius_[idx]
        if radius == "shell":
            rho = rho * (1.0 + 0.5 * torch.rand(n, generator=generator, dtype=torch.float64))
        z = self.means_[idx] + (self.cholesky_[idx] @ (rho.unsqueeze(1) * u).unsqueeze(-1)).squeeze(-1)
        return z.float()


@torch.no_grad()
def on_manifold_samples(cvae, ellipsoids: ClassEllipsoids, y: torch.Tensor, *, radius: str = "surface",
                        generator: torch.Generator | None = None, batch_size: int = 2048) -> torch.Tensor:
    """Type II outliers: decode boundary latents of classes ``y`` with that class's one-hot."""
    was_training = cvae.training
    cvae.eval()
    device = next(cvae.parameters()).device
    z, y = ellipsoids.sample(y, radius, generator).to(device), y.to(device)
    out = [cvae.decode(z[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    cvae.train(was_training)
    return torch.cat(out) if out else z.new_empty((0, *getattr(cvae, "image_shape", (1, 28, 28))))


@torch.no_grad()
def encode_means(cvae, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Encoder means of a dataset (the points the ellipsoids are fitted on)."""
    was_training = cvae.training
    cvae.eval()
    out = [cvae.encode(x[i:i + batch_size], y[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]
    cvae.train(was_training)
    return torch.cat(out)
