"""Where does a CVAE collapse?  Trace the liveness of the encoder's units over the first epoch.

A collapsed CVAE's encoder mean does not depend on the image (``oodgen.generate.health``).  This
trains the CVAE of one setting, profile and seed exactly as ``oodgen run`` does (same seed, data
order and optimiser) and records, every ``--every`` steps of the first ``--epochs`` epochs:

* ``conv1_alive`` / ``conv2_alive``: the share of each convolution's channels that output anything
  non-zero on the batch (a dead ReLU channel outputs 0 on every image);
* ``conv2_positive``: the share of the second convolution's outputs that are positive;
* ``hidden_alive``: the share of the 16-unit layer's units positive on some image of the batch;
* ``mu_std_max``: the largest standard deviation over the batch of a latent mean (~0: the
  encoder's output ignores the image).

It ends with the CVAE's health line.  Found with it (2026-12-01, MNIST ``quick``, seed 2, the
then-default ``--encoder-act leaky``): all 64 ReLU channels of the second convolution die within
the first 20 Adam steps, after which the encoder sees only the label (README "CVAE health").

    python -m experiments.diagnose_collapse --id mnist --profile quick --seed 2 --encoder-act leaky \
        --out results/ablation/collapse_trace_mnist_quick_seed2_leaky.json
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace

import torch

from oodgen.config import PROFILES, RunConfig
from oodgen.generate.health import cvae_health, health_line
from oodgen.models import CVAE
from oodgen.models.cvae import ENCODER_ACTIVATIONS
from oodgen.run import load_setting
from oodgen.train import fit_ellipsoids, train_cvae
from oodgen.utils import atomic_write_json, environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--id", default="mnist")
    ap.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--encoder-act", default="leaky", choices=ENCODER_ACTIVATIONS)
    ap.add_argument("--kl-warmup", type=float, default=1.0)
    ap.add_argument("--lr-warmup", type=int, default=0, help="CVAE learning-rate warm-up steps")
    ap.add_argument("--epochs", type=int, default=None, help="default: the profile's CVAE epochs")
    ap.add_argument("--every", type=int, default=10, help="record every N steps (and each of the first 10)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = RunConfig(id=a.id, seed=a.seed, profile=a.profile)
    stage = cfg.prof.cvae if a.epochs is None else replace(cfg.prof.cvae, epochs=a.epochs)
    data = load_setting(cfg)
    x, y = data.x, data.y
    torch.manual_seed(a.seed)                       # as oodgen run's first CVAE attempt
    cvae = CVAE(int(y.max()) + 1, cfg.latent, encoder_act=a.encoder_act)
    acts: dict[str, torch.Tensor] = {}
    trace: list[dict] = []
    step = [0]

    def keep(name):
        def hook(_m, _i, out):
            acts[name] = out.detach()
        return hook
    cvae.encoder.conv[1].register_forward_hook(keep("c1"))
    cvae.encoder.conv[3].register_forward_hook(keep("c2"))
    cvae.encoder.hidden.register_forward_hook(keep("h"))

    def record(_m, _i, out):
        s = step[0]
        step[0] += 1
        if not cvae.training or not (s < 10 or s % a.every == 0):
            return
        _, mu, _ = out
        alive = [(acts[k] != 0).flatten(2).any(2).any(0).float().mean().item() for k in ("c1", "c2")]
        trace.append({"step": s, "conv1_alive": round(alive[0], 4), "conv2_alive": round(alive[1], 4),
                      "conv2_positive": round((acts["c2"] > 0).float().mean().item(), 4),
                      "hidden_alive": round((acts["h"] > 0).any(0).float().mean().item(), 4),
                      "mu_std_max": round(mu.std(0).max().item(), 4)})
    cvae.register_forward_hook(record)
    t0 = time.perf_counter()
    hist = train_cvae(cvae, x, y, stage, None, a.seed, progress=False, log=lambda m: None,
                      kl_warmup=a.kl_warmup, lr_warmup=a.lr_warmup)
    cvae.eval()
    health = cvae_health(cvae, x, y, fit_ellipsoids(cvae, x, y), seed=a.seed)
    for r in trace[:10] + trace[10::max(1, len(trace) // 12)]:
        print(r, flush=True)
    print(health_line(health), flush=True)
    atomic_write_json(a.out, {
        "command": "python -m experiments.diagnose_collapse " + " ".join(sys.argv[1:]), "id": a.id, "profile": a.profile, "seed": a.seed,
        "encoder_act": a.encoder_act, "kl_warmup": a.kl_warmup, "lr_warmup": a.lr_warmup, "stage": asdict(stage),
        "loss": hist["loss"], "seconds": round(time.perf_counter() - t0, 1), "trace": trace,
        "health": {k: health[k] for k in ("active_dims", "recon_ratio", "spread_ratio", "collapsed")},
        "health_line": health_line(health), "environment": environment()})


if __name__ == "__main__":
    main()
