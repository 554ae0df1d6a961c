"""Why does the coloured-MNIST CVAE model shape but not colour?  Train only the CVAE on the
coloured-MNIST training split (the run's own train/validation split, `quick` profile's CVAE stage
unless --epochs says otherwise) for each latent size, and record its health (active dimensions,
reconstruction vs the class mean, colour_ratio) on the validation images, plus a PNG of
validation images over their reconstructions.  No OOD set is read: the choice rule, fixed before
the runs, is the smallest latent size (then the fewest epochs) whose CVAE passes every health
target (colour_ratio >= 0.5, active >= d - 2, reconstruction <= 0.85x the class mean).

    python -m experiments.make_coloured_mnist --out data/coloured-mnist
    python -m experiments.colour_cvae_sweep [--latents 8 12 16] [--epochs 2 5] [--colour-path none|offset|gain] \
        [--out results/ablation/colour_cvae_sweep.json]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from oodgen.config import PROFILES, Variant
from oodgen.data.user import load_user
from oodgen.generate.health import cvae_health
from oodgen.models import CVAE
from oodgen.run import train_val_split
from oodgen.train import train_cvae
from oodgen.utils import atomic_write_json, environment


def passes(h: dict) -> bool:
    return (h["active_dims"] >= h["latent_dim"] - 2 and h["recon_ratio"] <= 0.85
            and h.get("colour_ratio", 1.0) >= 0.5)


def panel(cvae, x, y, path: Path) -> None:
    from PIL import Image
    with torch.no_grad():
        mu, _ = cvae.encode(x, y)
        rec = torch.sigmoid(cvae.decoder.logits(mu, cvae.onehot(y)))
    rows = [torch.cat(list(t), dim=2) for t in (x, rec)]           # (3, H, W*n) each
    img = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/coloured-mnist/train.npz")
    ap.add_argument("--latents", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--epochs", type=int, nargs="+", default=[2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colour-path", choices=["none", "offset", "gain"], default="none",
                    help="the decoder's experimental colour term (oodgen.models.cvae.Decoder)")
    ap.add_argument("--out", default="results/ablation/colour_cvae_sweep.json")
    a = ap.parse_args()
    data = load_user(a.train)
    tr, va = train_val_split(len(data.images))
    x, y = torch.from_numpy(data.images[tr]), torch.from_numpy(data.labels[tr])
    xv, yv = torch.from_numpy(data.images[va]), torch.from_numpy(data.labels[va])
    out = Path(a.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    done = {(r["latent_dim"], r["epochs"]) for r in rows}
    base = PROFILES["quick"].cvae
    for epochs in a.epochs:
        for d in a.latents:
            if (d, epochs) in done:
                continue
            torch.manual_seed(a.seed)
            v = Variant()
            cvae = CVAE(10, d, sample_z=v.sample_z, encoder_act=v.encoder_act, in_channels=x.shape[1],
                        image_size=tuple(x.shape[2:]), colour_path=a.colour_path)
            stage = replace(base, epochs=epochs, schedule="cosine" if epochs > 2 else base.schedule)
            t0 = time.perf_counter()
            train_cvae(cvae, x, y, stage, None, a.seed, progress=False, kl_warmup=Variant().kl_warmup)
            secs = time.perf_counter() - t0
            cvae.eval()
            h = cvae_health(cvae, xv, yv, seed=a.seed)
            stem = "colour_cvae" if out.stem == "colour_cvae_sweep" else out.stem
            png = out.with_name(f"{stem}_d{d}_e{epochs}.png")
            panel(cvae, xv[:12], yv[:12], png)
            rows.append({"latent_dim": d, "epochs": epochs, "colour_path": a.colour_path, "stage": stage.__dict__, "seconds": secs,
                         "passes": passes(h), "png": str(png), "health": h})
            print(f"d={d} epochs={epochs}: {h['active_dims']}/{d} active, recon {h['recon_ratio']:.2f}x, "
                  f"colour_ratio {h.get('colour_ratio')}, {secs:.0f} s, passes={passes(h)}", flush=True)
            atomic_write_json(out, {"rows": rows, "command": "python -m experiments.colour_cvae_sweep", "seed": a.seed,
                                    "environment": environment(),
                                    "rule": "smallest latent, then fewest epochs, passing every health target"})
    ok = sorted((r["latent_dim"], r["epochs"]) for r in rows if r["passes"])
    print(f"choice: {ok[0] if ok else 'none passes'}")


if __name__ == "__main__":
    main()
