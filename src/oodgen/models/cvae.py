"""Conditional VAE of the paper's Figure 6a/6b (the authors' Keras architecture in PyTorch).

Encoder: Conv(32, 3x3, s2) -> Conv(64, 3x3, s2) -> flatten -> concat one-hot label ->
Dense 16 -> (mu, log_var).  Decoder: concat(z, one-hot) -> Dense 7*7*64 -> ConvT(64, s2) ->
ConvT(32, s2) -> ConvT(1, s1) -> sigmoid.  Loss: per-image summed BCE + KL.

``encoder_act`` sets the encoder's activations: ``"relu"`` is the paper's (and the authors') form,
ReLU everywhere; ``"leaky"`` puts LeakyReLU(0.2) in the 16-unit layer only; ``"leaky-all"`` (the
default) also in both convolutions.  With ReLU all 16 bottleneck units can end up inactive on every
image early in training; with a leaky bottleneck, the first full-size optimiser steps can still
kill all 64 ReLU channels of the second convolution (MNIST seed 2 in its first 20 steps).  Either
way the encoder sees only the label, its mean is a constant per class, and the CVAE has collapsed
to a per-class mean image (README "CVAE health"; :mod:`oodgen.generate.health`).  A LeakyReLU
cannot die.

``sample_z=True`` is the paper's VAE (reparameterised sampling during training);
``sample_z=False`` is the authors' released code, where the sampling layer returns the mean
(a deterministic conditional auto-encoder whose KL term acts as an L2 penalty on mu).

The input shape is a parameter (``in_channels``, ``image_size`` = (H, W), default 1 x 28 x 28;
H and W divisible by 4): the two stride-2 stages map H x W to H/4 x W/4 (7 x 7 for MNIST, 8 x 8
for 32 x 32 images) and the decoder mirrors them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


ENCODER_ACTIVATIONS = ("leaky-all", "leaky", "relu")


def _quarter(image_size) -> tuple[int, int]:
    h, w = (int(v) for v in image_size)
    if h < 4 or w < 4 or h % 4 or w % 4:
        raise ValueError(f"CVAE: image height and width must be multiples of 4 (two stride-2 stages), "
                         f"got {h} x {w}; resize or pad the images (e.g. 28 -> 28, 30 -> 32)")
    return h // 4, w // 4


class Encoder(nn.Module):
    def __init__(self, n_classes: int, latent_dim: int, in_channels: int = 1, act: str = "leaky-all",
                 image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        qh, qw = _quarter(image_size)
        if act not in ENCODER_ACTIVATIONS:
            raise ValueError(f"unknown encoder activation {act!r}; use one of {ENCODER_ACTIVATIONS}")
        self.act = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)

        def conv_act() -> nn.Module:
            return nn.LeakyReLU(0.2) if act == "leaky-all" else nn.ReLU()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), conv_act(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), conv_act(), nn.Flatten())
        self.hidden = nn.Linear(64 * qh * qw + n_classes, 16)
        self.mu = nn.Linear(16, latent_dim)
        self.log_var = nn.Linear(16, latent_dim)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.hidden(torch.cat([self.conv(x), y_onehot], dim=1)))
        return self.mu(h), self.log_var(h)


COLOUR_PATHS = ("none", "offset", "gain")


class Decoder(nn.Module):
    """Decoder g(z, y); ``net`` is a plain Sequential so its Jacobian can be taken layer by layer
    (see :func:`oodgen.generate.off_manifold.sequential_jacobian`)."""

    def __init__(self, n_classes: int, latent_dim: int, out_channels: int = 1,
                 image_size: tuple[int, int] = (28, 28), colour_path: str = "none"):
        super().__init__()
        qh, qw = _quarter(image_size)
        self.latent_dim = latent_dim
        if colour_path not in COLOUR_PATHS:
            raise ValueError(f"unknown colour_path {colour_path!r}; use one of {COLOUR_PATHS}")
        self.colour_path = colour_path if out_channels > 1 else "none"
        self.net = nn.Sequential(
            nn.Linear(latent_dim + n_classes, 64 * qh * qw), nn.ReLU(), nn.Unflatten(1, (64, qh, qw)),
            nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 3, stride=1, padding=1))
        # Colour images (beyond the paper, which is grey only), experimental and off by default: a
        # per-image, per-channel term from (z, y), "offset" (added to the logits) or "gain"
        # (p_c = sigmoid(net_c) * sigmoid(colour_c)).  Measured on coloured MNIST (CVAE alone, 2 epochs,
        # results/ablation/colour_cvae_sweep*.json): the reconstructions keep 8 % of the images' colour
        # saturation without, 25 % with "offset", 18 % with "gain"; the health target is 50 %.
        self.colour = (nn.Linear(latent_dim + n_classes, out_channels) if self.colour_path != "none" else None)

    def _parts(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net(u), (None if self.colour is None else self.colour(u)[:, :, None, None])

    def logits(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        """Logits of the pixel probabilities (for a colour decoder, logit of the gated product)."""
        shape, gain = self._parts(torch.cat([z, y_onehot], dim=-1))
        if gain is None:
            return shape
        if self.colour_path == "offset":
            return shape + gain
        log_p = (F.logsigmoid(shape) + F.logsigmoid(gain)).clamp(max=-1e-6)
        return log_p - torch.log(-torch.expm1(log_p))

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, y_onehot))

    def jacobian(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        """d sigmoid(net(z, y)) / dz for a batch, shape (B, C*H*W, d), in d+1 forward passes."""
        from ..generate.off_manifold import sequential_jacobian
        u = torch.cat([z, y_onehot], dim=-1)
        if self.colour is None:
            return sequential_jacobian(self.net, u, self.latent_dim, output_sigmoid=True)
        if self.colour_path == "offset":     # sigmoid'(L + o) (dL/dz + do/dz on every pixel)
            jac = sequential_jacobian(self.net, u, self.latent_dim, output_sigmoid=False)
            c, d = self.colour.out_features, self.latent_dim
            jac = (jac.view(len(u), c, -1, d) + self.colour.weight[None, :, None, :d]).reshape(len(u), -1, d)
            p = torch.sigmoid(self.logits(z, y_onehot)).flatten(1)
            return jac * (p * (1 - p)).unsqueeze(-1)
        # p = s(L) s(g): dp/dz = s'(L) s(g) dL/dz + s(L) s'(g) dg/dz, g the per-channel gain logit
        jac = sequential_jacobian(self.net, u, self.latent_dim, output_sigmoid=False)     # (B, C*H*W, d)
        shape, gain = self._parts(u)
        c, d = self.colour.out_features, self.latent_dim
        s_l, s_g = torch.sigmoid(shape).flatten(2), torch.sigmoid(gain).flatten(2)       # (B, C, HW), (B, C, 1)
        w = self.colour.weight[:, :d]                                                     # (C, d)
        jac = jac.view(len(u), c, -1, d) * (s_l * (1 - s_l) * s_g).unsqueeze(-1) \
            + (s_l * s_g * (1 - s_g)).unsqueeze(-1) * w[None, :, None, :]
        return jac.reshape(len(u), -1, d)


class CVAE(nn.Module):
    """Conditional VAE; ``forward`` returns (reconstruction logits, mu, log_var)."""

    def __init__(self, n_classes: int, latent_dim: int, sample_z: bool = True, encoder_act: str = "leaky-all",
                 in_channels: int = 1, image_size: tuple[int, int] = (28, 28), colour_path: str = "none"):
        super().__init__()
        self.n_classes = n_classes
        self.latent_dim = latent_dim
        self.sample_z = sample_z
        self.encoder_act = encoder_act
        self.image_shape = (int(in_channels), *(int(v) for v in image_size))
        self.encoder = Encoder(n_classes, latent_dim, in_channels, act=encoder_act, image_size=image_size)
        self.decoder = Decoder(n_classes, latent_dim, in_channels, image_size=image_size, colour_path=colour_path)

    @classmethod
    def for_variant(cls, n_classes: int, latent_dim: int, variant, image_shape=(1, 28, 28)) -> "CVAE":
        """The CVAE a run's :class:`~oodgen.config.Variant` describes (its z sampling and encoder
        layer) for images of ``image_shape`` = (C, H, W)."""
        c, h, w = image_shape
        return cls(n_classes, latent_dim, sample_z=variant.sample_z, encoder_act=variant.encoder_act,
                   in_channels=c, image_size=(h, w))

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.n_classes).to(torch.float32)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, self.onehot(y))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, self.onehot(y))

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        mu, log_var = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if (self.sample_z and self.training) else mu
        return self.decoder.logits(z, self.onehot(y)), mu, log_var

    @staticmethod
    def loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             kl_weight: float = 1.0, colour_sigma: float = 0.0) -> torch.Tensor:
        """Per-image summed BCE plus ``kl_weight`` * KL(q(z|x) || N(0, I)), averaged over the batch.

        ``colour_sigma`` > 0 (colour images only; beyond the paper): plus a Gaussian term on each
        image's :func:`chromaticity`, ``||c(x) - c(p)||^2 / (2 colour_sigma^2)``, p the decoded
        probabilities.  With the cross-entropy alone the coloured-MNIST CVAE's latent mean carries no
        colour at all (``experiments/colour_diagnosis.py``, README "Your own data")."""
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()) / x.shape[0]
        loss = bce + kl_weight * kl
        if colour_sigma > 0 and x.shape[1] > 1:
            diff = chromaticity(x) - chromaticity(torch.sigmoid(logits))
            loss = loss + diff.pow(2).sum(1).mean() / (2.0 * colour_sigma ** 2)
        return loss


def chromaticity(images: torch.Tensor) -> torch.Tensor:
    """(N, C): each channel's share of an image's total intensity (1/C each for a grey image)."""
    total = images.flatten(2).sum(2)
    return total / total.sum(1, keepdim=True).clamp_min(1e-8)
