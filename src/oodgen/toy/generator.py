"""A small conditional VAE on R^d vectors and its Type I / Type II boundary outliers.

The same method as the image CVAE (:mod:`oodgen.models.cvae`), sized for the 3-D toy:

* encoder: concat(x, one-hot y) -> Dense ``hidden`` (tanh) x 2 -> (mu, log_var), latent 2;
* decoder: concat(z, one-hot y) -> Dense ``hidden`` (tanh) x 2 -> Dense d (linear), an
  ``nn.Sequential`` so that :func:`oodgen.generate.off_manifold.sequential_jacobian` gives its
  d x latent Jacobian in latent + 1 forward passes;
* loss: Gaussian likelihood with fixed std ``sigma`` (sum of squared errors / 2 sigma^2) + KL.

Outliers come from :mod:`oodgen.generate` unchanged: Type I is ``off_manifold_samples`` (a step
of random sign and length beta ~ U[low, high] along a uniform unit direction of the left null
space of the decoder's Jacobian, *not* clipped, since vectors have no [0, 1] range); Type II is
``on_manifold_samples`` on each class's 95 % ``ClassEllipsoids`` surface.  On the sphere the
null space is one-dimensional (3 - 2), the learned surface's normal, so Type I points sit above
and below the classes; Type II points decode to a ring around each class on the sphere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..generate import ClassEllipsoids, encode_means, off_manifold_samples, on_manifold_samples
from ..generate.off_manifold import sequential_jacobian

TOY_BETA = (0.05, 0.5)   # Type I step on the unit sphere: the paper's U[0.1, 1] is for 784-d images


class VectorDecoder(nn.Module):
    """g(z, y) = net(concat(z, one-hot y)); ``jacobian`` is d g / d z."""

    def __init__(self, n_classes: int, latent_dim: int, dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(latent_dim + n_classes, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, y_onehot], dim=-1))

    def jacobian(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        """Shape (B, dim, latent_dim)."""
        return sequential_jacobian(self.net, torch.cat([z, y_onehot], dim=-1), self.latent_dim)


class VectorCVAE(nn.Module):
    """Conditional VAE on vectors with the interface :mod:`oodgen.generate` expects
    (``onehot``, ``encode``, ``decode``, ``decoder.jacobian``).

    Parameters
    ----------
    n_classes, dim : number of classes and input dimension.
    latent_dim : 2 for the sphere (the data are a 2-D surface).
    hidden : width of the two hidden layers of encoder and decoder.
    sigma : decoder standard deviation of the Gaussian likelihood; small values make the
        reconstruction (and so the learned surface) sharp.
    """

    def __init__(self, n_classes: int = 2, dim: int = 3, latent_dim: int = 2, hidden: int = 64,
                 sigma: float = 0.05):
        super().__init__()
        self.n_classes, self.dim, self.latent_dim, self.sigma = n_classes, dim, latent_dim, sigma
        self.encoder_net = nn.Sequential(nn.Linear(dim + n_classes, hidden), nn.Tanh(),
                                         nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = VectorDecoder(n_classes, latent_dim, dim, hidden)

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.n_classes).to(torch.float32)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder_net(torch.cat([x, self.onehot(y)], dim=-1)).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, self.onehot(y))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_var = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        return self.decode(z, y), mu, log_var

    def loss(self, recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per sample (up to a constant), averaged over the batch."""
        nll = ((recon - x) ** 2).sum(1) / (2.0 * self.sigma ** 2)
        kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1)
        return (nll + kl).mean()


def train_vector_cvae(cvae: VectorCVAE, x: torch.Tensor, y: torch.Tensor, steps: int, *, batch_size: int = 256,
                      lr: float = 3e-3, generator: torch.Generator | None = None) -> list[float]:
    """Adam on random mini-batches for ``steps`` steps; returns the loss every 50 steps."""
    opt = torch.optim.Adam(cvae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    cvae.train()
    history = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        xb = x[idx]
        recon, mu, log_var = cvae(xb, y[idx])
        loss = cvae.loss(recon, xb, mu, log_var)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            history.append(loss.item())
    cvae.eval()
    return history


def type1_samples(cvae: VectorCVAE, x: torch.Tensor, y: torch.Tensor, beta: tuple[float, float] = TOY_BETA,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Type I (off-manifold) outliers of points ``x``: unclipped null-space steps."""
    return off_manifold_samples(cvae, x, y, beta=beta, nullspace="uniform", generator=generator, clip=False)


def fit_class_ellipsoids(cvae: VectorCVAE, x: torch.Tensor, y: torch.Tensor,
                         coverage: float = 0.95) -> ClassEllipsoids:
    """Per-class latent ellipsoids holding ``coverage`` of the encoder means."""
    return ClassEllipsoids(coverage=coverage).fit(encode_means(cvae, x, y), y)


def type2_samples(cvae: VectorCVAE, ellipsoids: ClassEllipsoids, y: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Type II (on-manifold) outliers of classes ``y``: decoded points of the ellipsoid surfaces."""
    return on_manifold_samples(cvae, ellipsoids, y, radius="surface", generator=generator)
