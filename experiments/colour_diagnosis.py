"""Why the coloured-MNIST CVAE reconstructs grey digits: does its latent mean carry colour at all?

Trains the default CVAE (LeakyReLU, KL warm-up over the first epoch, d = 8 or ``--latent``, Adam 2e-3, batch 256) on
the first ``--n`` coloured-MNIST training images for ``--epochs`` epochs with one of these losses:

* ``bce``: the paper's per-pixel Bernoulli cross-entropy + KL (what every run uses);
* ``chroma``: that, plus a Gaussian term on each image's chromaticity (the share of each channel in
  the image's total intensity), ``||c(x) - c(p)||^2 / (2 sigma^2)``, p the decoded probabilities;
* ``chroma-only``: a deterministic auto-encoder (z = mu, no KL) trained on the chromaticity term
  alone: can this encoder and decoder carry colour at all?

and records, on 3,000 held-out training images (no OOD data): the CVAE health
(``oodgen.generate.health.cvae_health``: active dimensions, reconstruction ratio, ``colour_ratio``),
the R^2 of a linear fit of each image's chromaticity from its latent mean (first half fits, second
half scores), and the correlation of the decoded chromaticity with the image's.

    python -m experiments.make_coloured_mnist --out data/coloured-mnist
    python -m experiments.colour_diagnosis --loss bce --epochs 2 --n 20000
    python -m experiments.colour_diagnosis --loss chroma --sigma 0.005
    python -m experiments.colour_diagnosis --loss chroma-only --epochs 1 --n 10000 --sigma 0.02
    python -m experiments.colour_diagnosis --loss chroma --sigma 0.005 --epochs 3 --chroma-epochs 1

Training is :func:`oodgen.train.train_cvae`, the loop every run uses, with its per-epoch shuffling and
seeds. The committed rows came from an earlier copy of that loop with its own shuffling: a re-run
measures the same quantities on other batches, so its numbers match them in kind, not to the digit.

Rows are appended to ``results/ablation/colour_diagnosis.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from oodgen.config import PROFILES
from oodgen.data.user import load_user
from oodgen.generate.health import cvae_health
from oodgen.models import CVAE
from oodgen.models.cvae import chromaticity
from oodgen.train import train_cvae
from oodgen.utils import atomic_write_json, environment

LOSSES = ("bce", "chroma", "chroma-only")
KL_WARMUP_EPOCHS = 1.0
STAGE = PROFILES["quick"].cvae          # Adam 2e-3, batch 256, constant learning rate


class ChromaOnlyAutoEncoder(CVAE):
    """``--loss chroma-only``: built with ``sample_z=False`` (z = mu), trained on the chromaticity term
    alone (no cross-entropy, no KL)."""

    @staticmethod
    def loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             kl_weight: float = 1.0, colour_sigma: float = 0.0) -> torch.Tensor:
        diff = chromaticity(x) - chromaticity(torch.sigmoid(logits))
        return diff.pow(2).sum(1).mean() / (2 * colour_sigma ** 2)


def train(cvae: CVAE, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> None:
    """``a.epochs`` epochs of :func:`train_cvae`; with ``--chroma-epochs K`` the colour term is on for
    the first K epochs, then training resumes from their checkpoint (optimiser state included) without it."""
    stage = replace(STAGE, epochs=a.epochs)
    sigma = 0.0 if a.loss == "bce" else a.sigma
    if a.loss != "chroma" or a.chroma_epochs is None or a.chroma_epochs >= a.epochs:
        train_cvae(cvae, x, y, stage, None, a.seed, progress=False, kl_warmup=KL_WARMUP_EPOCHS, colour_sigma=sigma)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "cvae.pt"
        train_cvae(cvae, x, y, replace(stage, epochs=a.chroma_epochs), ckpt, a.seed, progress=False,
                   kl_warmup=KL_WARMUP_EPOCHS, colour_sigma=sigma)
        train_cvae(cvae, x, y, stage, ckpt, a.seed, progress=False, kl_warmup=KL_WARMUP_EPOCHS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/coloured-mnist/train.npz")
    ap.add_argument("--loss", choices=LOSSES, default="bce")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--sigma", type=float, default=0.02, help="scale of the chromaticity term")
    ap.add_argument("--chroma-epochs", type=int, default=None,
                    help="with --loss chroma: use the chromaticity term in the first K epochs only "
                         "(a colour warm-up: does the latent keep colour once it has found it?)")
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/ablation/colour_diagnosis.json")
    a = ap.parse_args()
    data = load_user(a.train)
    x, y = torch.from_numpy(data.images[:a.n]), torch.from_numpy(data.labels[:a.n]).long()
    xv, yv = torch.from_numpy(data.images[-3000:]), torch.from_numpy(data.labels[-3000:]).long()
    if a.n > len(data.images) - 3000:
        raise SystemExit(f"--n must leave the last 3,000 images held out (at most {len(data.images) - 3000})")
    torch.manual_seed(a.seed)
    model = ChromaOnlyAutoEncoder if a.loss == "chroma-only" else CVAE
    cvae = model(int(y.max()) + 1, a.latent, sample_z=a.loss != "chroma-only", in_channels=x.shape[1],
                 image_size=tuple(x.shape[2:]))
    t0 = time.perf_counter()
    train(cvae, x, y, a)
    health = cvae_health(cvae, xv, yv, seed=a.seed)
    with torch.no_grad():
        mu, _ = cvae.encode(xv, yv)
        decoded = cvae.decode(mu, yv)
    c_in, c_out = chromaticity(xv).numpy(), chromaticity(decoded).numpy()
    design = np.c_[mu.numpy(), np.ones(len(mu))]
    half = len(design) // 2
    coef, *_ = np.linalg.lstsq(design[:half], c_in[:half], rcond=None)
    resid = design[half:] @ coef - c_in[half:]
    r2 = 1 - (resid ** 2).sum(0) / ((c_in[half:] - c_in[half:].mean(0)) ** 2).sum(0)
    row = {"loss": a.loss, "latent": a.latent, "epochs": a.epochs, "chroma_epochs": a.chroma_epochs, "n": a.n, "sigma": a.sigma,
           "seed": a.seed,
           "seconds": round(time.perf_counter() - t0, 1),
           "active_dims": health["active_dims"], "recon_ratio": health["recon_ratio"],
           "colour_ratio": health.get("colour_ratio"),
           "chromaticity_r2_from_mu": [round(float(v), 3) for v in r2],
           "decoded_chromaticity_corr": [round(float(np.corrcoef(c_in[:, k], c_out[:, k])[0, 1]), 3)
                                         for k in range(c_in.shape[1])]}
    print(json.dumps(row))
    out = Path(a.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    atomic_write_json(out, {"rows": rows + [row], "command": "python -m experiments.colour_diagnosis",
                            "environment": environment()})


if __name__ == "__main__":
    main()
