"""Is the CVAE a generator?  The health numbers recorded for every trained CVAE.

Type I and Type II outliers are only as good as the CVAE behind them.  A collapsed CVAE (the
encoder mean constant over images, the decoder a per-class mean image) still trains, still
gives a loss, and makes every Type II sample of a class one and the same image and every Type I
Jacobian of a class be taken at one point.  :func:`cvae_health` measures, on a fixed subset of
training images:

* ``latent_var``: Var over images of the encoder mean E[z|x], per latent dimension; a
  dimension is *active* when its variance exceeds ``ACTIVE_VAR`` (0.01, Burda et al. 2016's
  activity statistic);
* ``latent_kl``: the mean KL(q(z|x) || N(0, 1)) per dimension, in nats;
* ``recon_nats``: the reconstruction cross-entropy at z = mu, in nats per image, beside
  ``class_mean_nats``, the same for a predictor that outputs its class's mean image (what a
  decoder that ignores z can at best achieve), and their ratio ``recon_ratio``;
* ``type2_radius``: each class's 95 % Mahalanobis radius;
* ``type2_spread`` / ``train_spread``: the mean pairwise L2 distance between a class's Type II
  samples and between that class's training images, and ``spread_ratio`` = their mean ratio.

A CVAE is flagged ``collapsed`` when fewer than half of its latent dimensions are active or its
reconstruction is not clearly better than the class mean (``recon_ratio > COLLAPSE_RATIO``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .on_manifold import on_manifold_samples

ACTIVE_VAR = 0.01
COLLAPSE_RATIO = 0.9
N_HEALTH = 5000
N_SPREAD = 64


class CollapsedCVAEError(RuntimeError):
    """The CVAE failed its health check and the caller asked for strict checking."""


class CollapsedCVAEWarning(UserWarning):
    """The CVAE failed its health check: its outliers do not sample the data's boundary."""


COLOUR_RATIO_MIN = 0.5     # colour images: reconstructions must keep at least half the colour saturation


def colour_saturation(images: torch.Tensor, bright: float = 0.2) -> float:
    """Mean over bright pixels (channel mean > ``bright``) of std / mean across channels: 0 for grey.
    NaN for grey (one-channel) images or when no pixel is bright."""
    if images.shape[1] < 2:
        return math.nan
    m, s = images.mean(1), images.std(1)
    mask = m > bright
    return float((s[mask] / m[mask]).mean()) if mask.any() else math.nan


def _mean_pairwise_l2(images: torch.Tensor) -> float:
    flat = images.reshape(len(images), -1).double()
    dist = torch.cdist(flat, flat)
    n = len(flat)
    return float(dist.sum() / max(n * (n - 1), 1))


@torch.no_grad()
def _type2_spread(cvae, ellipsoids, xs: torch.Tensor, ys: torch.Tensor, n_spread: int, gen) -> dict:
    """The Type II radius of each class and the spread of its samples against the training images'."""
    type2_spread, train_spread = [], []
    for k in ellipsoids.classes_:
        labels = torch.full((n_spread,), int(k), dtype=torch.long)
        samples = on_manifold_samples(cvae, ellipsoids, labels, radius="surface", generator=gen).cpu()
        type2_spread.append(_mean_pairwise_l2(samples))
        train_spread.append(_mean_pairwise_l2(xs[ys == k][:n_spread]))
    ratios = [a / b for a, b in zip(type2_spread, train_spread) if b > 0]
    return {"type2_radius": [round(float(r), 4) for r in ellipsoids.radius_],
            "type2_spread": [round(v, 4) for v in type2_spread], "train_spread": [round(v, 4) for v in train_spread],
            "spread_ratio": round(float(np.mean(ratios)), 4) if ratios else math.nan}


@torch.no_grad()
def cvae_health(cvae, x: torch.Tensor, y: torch.Tensor, ellipsoids=None, *, n: int = N_HEALTH,
                n_spread: int = N_SPREAD, seed: int = 0, batch_size: int = 1000) -> dict:
    """Health numbers of ``cvae`` on (up to ``n`` of) the images ``x`` with labels ``y``.

    ``ellipsoids`` (a fitted :class:`~oodgen.generate.ClassEllipsoids`) adds the Type II radius
    and spread; without it those fields are absent.  Deterministic for a given ``seed``.
    """
    was_training = cvae.training
    cvae.eval()
    device = next(cvae.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[:n]
    xs, ys = x[idx.to(x.device)], y[idx.to(y.device)]
    mus, log_vars, recon, recon_images = [], [], [], []
    for i in range(0, len(xs), batch_size):
        xb, yb = xs[i:i + batch_size].to(device), ys[i:i + batch_size].to(device)
        mu, log_var = cvae.encode(xb, yb)
        logits = cvae.decoder.logits(mu, cvae.onehot(yb))
        recon.append(F.binary_cross_entropy_with_logits(logits, xb, reduction="none").flatten(1).sum(1).cpu())
        if xb.shape[1] > 1:
            recon_images.append(torch.sigmoid(logits).cpu())
        mus.append(mu.cpu())
        log_vars.append(log_var.cpu())
    cvae.train(was_training)
    mu, log_var, recon_nats = torch.cat(mus).double(), torch.cat(log_vars).double(), torch.cat(recon).double()
    latent_var = mu.var(0)
    kl = (0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)).mean(0)

    xs_cpu, ys_cpu = xs.detach().cpu().double(), ys.detach().cpu()
    class_mean = torch.zeros_like(xs_cpu)
    classes = torch.unique(ys_cpu)
    for k in classes:
        sel = ys_cpu == k
        class_mean[sel] = xs_cpu[sel].mean(0, keepdim=True).clamp(1e-7, 1 - 1e-7)
    class_nats = F.binary_cross_entropy(class_mean, xs_cpu, reduction="none").flatten(1).sum(1)

    d = mu.shape[1]
    active = latent_var > ACTIVE_VAR
    recon_mean, class_mean_nats = float(recon_nats.mean()), float(class_nats.mean())
    health: dict = {
        "n_images": len(xs),
        "latent_dim": d,
        "active_dims": int(active.sum()),
        "active_threshold": ACTIVE_VAR,
        "latent_var": [round(float(v), 5) for v in latent_var],
        "latent_kl": [round(float(v), 5) for v in kl],
        "min_active_var": round(float(latent_var[active].min()), 5) if active.any() else 0.0,
        "recon_nats": round(recon_mean, 3),
        "class_mean_nats": round(class_mean_nats, 3),
        "recon_ratio": round(recon_mean / class_mean_nats, 4) if class_mean_nats > 0 else math.nan,
    }
    if recon_images:
        # Colour: the nats above can be good while every reconstruction is grey (seen on coloured MNIST).
        data_sat, rec_sat = colour_saturation(xs.cpu().float()), colour_saturation(torch.cat(recon_images))
        health["colour_saturation"] = {"data": round(data_sat, 4), "reconstruction": round(rec_sat, 4)}
        health["colour_ratio"] = round(rec_sat / data_sat, 4) if data_sat > 0 else math.nan
    if ellipsoids is not None:
        health.update(_type2_spread(cvae, ellipsoids, xs_cpu, ys_cpu, n_spread, gen))
    reasons = []
    if health["active_dims"] < d / 2:
        reasons.append(f"only {health['active_dims']} of {d} latent dimensions active (Var E[z|x] > {ACTIVE_VAR})")
    if not health["recon_ratio"] <= COLLAPSE_RATIO:
        reasons.append(f"reconstruction {recon_mean:.1f} nats is not clearly better than the class mean's "
                       f"{class_mean_nats:.1f} (ratio {health['recon_ratio']:.2f} > {COLLAPSE_RATIO})")
    if not health.get("colour_ratio", 1.0) >= COLOUR_RATIO_MIN:
        reasons.append(f"reconstructions keep {health['colour_ratio']:.2f} of the images' colour saturation "
                       f"(< {COLOUR_RATIO_MIN}): the CVAE models shape but not colour (the colour recipe: "
                       "--colour-sigma 0.01 --latent 12)")
    health["collapsed"] = bool(reasons)
    health["collapse_reasons"] = reasons
    return health


def health_line(health: dict) -> str:
    """A one-line summary of :func:`cvae_health`'s numbers."""
    var = health["latent_var"]
    active = [v for v in var if v > health["active_threshold"]]
    span = f"Var {min(active):.2f}-{max(active):.2f}" if active else "none varies"
    line = (f"CVAE health: {health['active_dims']}/{health['latent_dim']} latent dims active ({span}); "
            f"reconstruction {health['recon_nats']:.1f} nats vs class mean {health['class_mean_nats']:.1f} "
            f"({health['recon_ratio']:.2f}x)")
    if "spread_ratio" in health:
        line += f"; Type II spread {health['spread_ratio']:.2f}x the training images'"
    if "colour_ratio" in health:
        line += f"; colour kept {health['colour_ratio']:.2f}x"
    return line + (" -- COLLAPSED" if health["collapsed"] else " -- healthy")


def check_health(health: dict, strict: bool = False, log=print) -> None:
    """Print the summary line; warn loudly (or raise under ``strict``) for a collapsed CVAE."""
    log(health_line(health))
    if not health["collapsed"]:
        return
    msg = ("the CVAE has collapsed: " + "; ".join(health["collapse_reasons"]) +
           ". Its Type I/II outliers do not sample the class boundaries, so the n+1 classifier trained on "
           "them measures noise and class-mean blurs, not the paper's method.")
    if strict:
        raise CollapsedCVAEError(msg)
    banner = "!" * 78
    log(f"{banner}\nWARNING: {msg}\n{banner}")
    warnings.warn(msg, CollapsedCVAEWarning, stacklevel=2)
