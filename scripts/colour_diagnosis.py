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

    python scripts/make_coloured_mnist.py --out data/coloured-mnist
    python scripts/colour_diagnosis.py --loss bce --epochs 2 --n 20000
    python scripts/colour_diagnosis.py --loss chroma --sigma 0.005
    python scripts/colour_diagnosis.py --loss chroma-only --epochs 1 --n 10000 --sigma 0.02
    python scripts/colour_diagnosis.py --loss chroma --sigma 0.005 --epochs 3 --chroma-epochs 1

Rows are appended to ``results/ablation/colour_diagnosis.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from oodgen.data.user import load_user
from oodgen.generate.health import cvae_health
from oodgen.models import CVAE
from oodgen.models.cvae import chromaticity
from oodgen.utils import atomic_write_json, environment

LOSSES = ("bce", "chroma", "chroma-only")


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
    only = a.loss == "chroma-only"
    cvae = CVAE(int(y.max()) + 1, a.latent, sample_z=not only, in_channels=x.shape[1], image_size=tuple(x.shape[2:]))
    opt = torch.optim.Adam(cvae.parameters(), 2e-3)
    steps, t0 = math.ceil(len(x) / 256), time.perf_counter()
    gen = torch.Generator().manual_seed(a.seed)
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps):
            idx = perm[i * 256:(i + 1) * 256]
            xb, yb = x[idx], y[idx]
            logits, mu, log_var = cvae(xb, yb)
            if only:
                loss = (chromaticity(xb) - chromaticity(torch.sigmoid(logits))).pow(2).sum(1).mean() / (2 * a.sigma ** 2)
            else:       # the run's own loss (CVAE.loss: cross-entropy, KL warm-up over epoch 1, colour term)
                use_chroma = a.loss == "chroma" and (a.chroma_epochs is None or epoch < a.chroma_epochs)
                loss = cvae.loss(logits, xb, mu, log_var, min(1.0, (epoch * steps + i) / steps),
                                 a.sigma if use_chroma else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{a.epochs}: loss {loss.item():.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cvae.eval()
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
    atomic_write_json(out, {"rows": rows + [row], "command": "python scripts/colour_diagnosis.py",
                            "environment": environment()})


if __name__ == "__main__":
    main()
