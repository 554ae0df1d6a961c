"""The confident classifier of Lee et al. (2018a), "Training confidence-calibrated classifiers
for detecting out-of-distribution samples", for vectors: a GAN and a classifier trained jointly
(the paper's eq. 5, as in its appendix A, with no pre-trained classifier).

With U the uniform distribution over the n classes and KL(U || p) = -log n - mean_k log p_k:

* classifier:     CE(C(x_in), y) + beta * KL(U || C(G(z)))                    (5a)
* generator:      BCE(D(G(z)), real) + beta * KL(U || C(G(z)))               (5b + 5c)
* discriminator:  BCE(D(x_in), real) + BCE(D(G(z)), fake)                    (5c)

One step of each per iteration (discriminator, generator, classifier), Adam(lr, betas 0.5, 0.999).
The KL term pulls the generator towards the classifier's high-entropy region near the data,
the GAN term towards the data; the generated points are the confident classifier's outliers.

Score (higher = more OOD): 1 - max_k p(k | x), the sign-flipped maximum softmax probability.
Hyper-parameters: ``noise_dim`` 2, ``hidden`` 64, ``beta`` 1.0, ``lr`` 1e-3, ``batch_size`` 128.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(U || softmax(logits))."""
    n = logits.shape[1]
    return (-math.log(n) - F.log_softmax(logits, dim=1).mean(1)).mean()


class ConfidentGAN:
    """Joint GAN + confident-classifier training on labelled vectors.

    Parameters
    ----------
    n_classes, dim : number of classes and input dimension.
    noise_dim : dimension of the generator's Gaussian input.
    hidden : width of the two hidden layers of all three networks.
    beta : weight of the KL(U || p(y | G(z))) term in both the classifier and generator losses.
    lr, batch_size, steps : Adam learning rate, in-distribution (and generated) batch size, iterations.
    """

    def __init__(self, n_classes: int = 2, dim: int = 3, noise_dim: int = 2, hidden: int = 64,
                 beta: float = 1.0, lr: float = 1e-3, batch_size: int = 128, steps: int = 2000):
        self.n_classes, self.dim, self.noise_dim, self.hidden = n_classes, dim, noise_dim, hidden
        self.beta, self.lr, self.batch_size, self.steps = beta, lr, batch_size, steps

    def fit(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> "ConfidentGAN":
        """Train from the current torch seed (initialisation) and ``generator`` (batches, noise)."""
        self.generator_ = mlp(self.noise_dim, self.dim, self.hidden)
        self.discriminator_ = mlp(self.dim, 1, self.hidden)
        self.classifier_ = mlp(self.dim, self.n_classes, self.hidden)
        opts = [torch.optim.Adam(m.parameters(), lr=self.lr, betas=(0.5, 0.999))
                for m in (self.discriminator_, self.generator_, self.classifier_)]
        opt_d, opt_g, opt_c = opts
        bs = min(self.batch_size, len(x))
        ones, zeros = torch.ones(bs, 1), torch.zeros(bs, 1)
        self.history_ = []
        for step in range(self.steps):
            idx = torch.randint(0, len(x), (bs,), generator=generator)
            xb, yb = x[idx], y[idx]
            noise = torch.randn(bs, self.noise_dim, generator=generator)

            fake = self.generator_(noise)
            loss_d = (F.binary_cross_entropy_with_logits(self.discriminator_(xb), ones)
                      + F.binary_cross_entropy_with_logits(self.discriminator_(fake.detach()), zeros))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            loss_g = (F.binary_cross_entropy_with_logits(self.discriminator_(fake), ones)
                      + self.beta * kl_uniform(self.classifier_(fake)))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            loss_c = (F.cross_entropy(self.classifier_(xb), yb)
                      + self.beta * kl_uniform(self.classifier_(fake.detach())))
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
            if step % 100 == 0 or step == self.steps - 1:
                self.history_.append({"step": step, "d": loss_d.item(), "g": loss_g.item(), "c": loss_c.item()})
        for m in (self.generator_, self.discriminator_, self.classifier_):
            m.eval()
        return self

    def _check(self) -> None:
        if not hasattr(self, "generator_"):
            raise RuntimeError("ConfidentGAN is not fitted: call fit(x, y) first")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated outliers G(z)."""
        self._check()
        return self.generator_(torch.randn(n, self.noise_dim, generator=generator))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self._check()
        return self.classifier_(x)

    def score(self, x: torch.Tensor) -> np.ndarray:
        """1 - max softmax probability (higher = more OOD), float64 (N,)."""
        p = torch.softmax(self.logits(x).double(), dim=1)
        return (1.0 - p.max(1).values).numpy()
