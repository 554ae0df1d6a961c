"""Conditional VAE of the paper's Figure 6a/6b (the authors' Keras architecture in PyTorch).

Encoder: Conv(32, 3x3, s2) -> Conv(64, 3x3, s2) -> flatten -> concat one-hot label ->
Dense 16 -> (mu, log_var).  Decoder: concat(z, one-hot) -> Dense 7*7*64 -> ConvT(64, s2) ->
ConvT(32, s2) -> ConvT(1, s1) -> sigmoid.  Loss: per-image summed BCE + KL.

``encoder_act`` is the activation of the encoder's 16-unit layer: ``"relu"`` is the paper's (and
the authors') form; ``"leaky"`` (LeakyReLU 0.2, the default) keeps that bottleneck from dying.
With ReLU all 16 units can end up inactive on every image early in training, after which the
encoder mean is a constant and the CVAE has collapsed to a per-class mean image (measured in
the README's "CVAE health" section; :mod:`oodgen.generate.health`).

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


ENCODER_ACTIVATIONS = ("leaky", "relu")


def _quarter(image_size) -> tuple[int, int]:
    h, w = (int(v) for v in image_size)
    if h < 4 or w < 4 or h % 4 or w % 4:
        raise ValueError(f"CVAE: image height and width must be multiples of 4 (two stride-2 stages), "
                         f"got {h} x {w}; resize or pad the images (e.g. 28 -> 28, 30 -> 32)")
    return h // 4, w // 4


class Encoder(nn.Module):
    def __init__(self, n_classes: int, latent_dim: int, in_channels: int = 1, act: str = "leaky",
                 image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        qh, qw = _quarter(image_size)
        if act not in ENCODER_ACTIVATIONS:
            raise ValueError(f"unknown encoder activation {act!r}; use one of {ENCODER_ACTIVATIONS}")
        self.act = nn.LeakyReLU(0.2) if act == "leaky" else nn.ReLU()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.hidden = nn.Linear(64 * qh * qw + n_classes, 16)
        self.mu = nn.Linear(16, latent_dim)
        self.log_var = nn.Linear(16, latent_dim)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.hidden(torch.cat([self.conv(x), y_onehot], dim=1)))
        return self.mu(h), self.log_var(h)


class Decoder(nn.Module):
    """Decoder g(z, y); ``net`` is a plain Sequential so its Jacobian can be taken layer by layer
    (see :func:`oodgen.generate.off_manifold.sequential_jacobian`)."""

    def __init__(self, n_classes: int, latent_dim: int, out_channels: int = 1,
                 image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        qh, qw = _quarter(image_size)
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim + n_classes, 64 * qh * qw), nn.ReLU(), nn.Unflatten(1, (64, qh, qw)),
            nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 3, stride=1, padding=1))

    def logits(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, y_onehot], dim=-1))

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, y_onehot))

    def jacobian(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        """d sigmoid(net(z, y)) / dz for a batch, shape (B, C*H*W, d), in d+1 forward passes."""
        from ..generate.off_manifold import sequential_jacobian
        return sequential_jacobian(self.net, torch.cat([z, y_onehot], dim=-1), self.latent_dim,
                                   output_sigmoid=True)


class CVAE(nn.Module):
    """Conditional VAE; ``forward`` returns (reconstruction logits, mu, log_var)."""

    def __init__(self, n_classes: int, latent_dim: int, sample_z: bool = True, encoder_act: str = "leaky",
                 in_channels: int = 1, image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        self.n_classes = n_classes
        self.latent_dim = latent_dim
        self.sample_z = sample_z
        self.encoder_act = encoder_act
        self.image_shape = (int(in_channels), *(int(v) for v in image_size))
        self.encoder = Encoder(n_classes, latent_dim, in_channels, act=encoder_act, image_size=image_size)
        self.decoder = Decoder(n_classes, latent_dim, in_channels, image_size=image_size)

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
             kl_weight: float = 1.0) -> torch.Tensor:
        """Per-image summed BCE plus ``kl_weight`` * KL(q(z|x) || N(0, I)), averaged over the batch."""
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()) / x.shape[0]
        return bce + kl_weight * kl
