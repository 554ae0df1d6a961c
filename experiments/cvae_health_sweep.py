"""Why does the CVAE collapse, and what fixes it?  Train only the CVAE under one change at a time
and record its health numbers (``oodgen.generate.health``).

Usage:  python -m experiments.cvae_health_sweep --id mnist --profile quick --seeds 0 \
            --configs paper leaky warmup authors-opt z-mean --out results/cvae_health

Each (setting, profile, config, seed) writes ``OUT/<id>-<profile>-<config>-seed<k>.json`` with
the health numbers, the training loss, the options used, the seconds and the environment, and
``...-type2.png``: four training images and four Type II samples per class side by side (look at
them before believing the numbers); a finished file is skipped (the sweep resumes).
``--draw-only`` draws the picture of finished entries from their ``--ckpt-dir`` checkpoints
(entries trained before the picture existed).  Configurations:

* ``paper``: the paper's architecture and loss (ReLU encoder bottleneck, sampled z), the
  profile's optimiser (PyTorch's default initialisation);
* ``leaky``: LeakyReLU(0.2) in the encoder's 16-unit layer;
* ``warmup``: the paper's form with the KL weight ramped from 0 to 1 over the first epoch;
* ``authors-opt``: the paper's form with the authors' optimiser and initialisation (RMSprop
  1e-3, batch 128, Glorot-uniform weights, zero biases);
* ``z-mean``: the paper's form with the authors' deterministic z = mu;
* ``leaky-z-mean``: LeakyReLU with z = mu;
* ``leaky-warmup``: LeakyReLU and the KL warm-up over the first epoch (oodgen's default until
  2026-12-01);
* ``leakyall-warmup``: LeakyReLU(0.2) in both encoder convolutions too, and the KL warm-up
  (oodgen's default since 2026-12-01: the convolutions' ReLUs could still die);
* ``leaky-warmup-lrw100``: ``leaky-warmup`` with the learning rate ramped over the first 100 steps.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from oodgen import data as D
from oodgen.config import PROFILES, RunConfig, Stage
from oodgen.generate.health import cvae_health, health_line
from oodgen.models import CVAE
from oodgen.run import load_setting
from oodgen.report import class_picks, type2_grid
from oodgen.train import fit_ellipsoids, load_checkpoint, train_cvae
from oodgen.utils import atomic_write_json, environment, generator, resolve_device

CONFIGS = {
    "paper": dict(encoder_act="relu"),
    "leaky": dict(encoder_act="leaky"),
    "warmup": dict(encoder_act="relu", kl_warmup=1.0),
    "authors-opt": dict(encoder_act="relu", optimizer="rmsprop", lr=1e-3, batch_size=128, glorot=True),
    "z-mean": dict(encoder_act="relu", sample_z=False),
    "leaky-z-mean": dict(encoder_act="leaky", sample_z=False),
    "leaky-warmup": dict(encoder_act="leaky", kl_warmup=1.0),
    "leakyall-warmup": dict(encoder_act="leaky-all", kl_warmup=1.0),
    "leaky-warmup-lrw100": dict(encoder_act="leaky", kl_warmup=1.0, lr_warmup=100),
}


def glorot_(model: nn.Module) -> None:
    """Keras' initialisation: Glorot-uniform weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def draw_type2(cvae: CVAE, ellipsoids, x: torch.Tensor, y: torch.Tensor, seed: int, path: Path, title: str) -> None:
    """Four training images and four Type II samples (on the 95 % ellipsoid) per class, side by side."""
    picks = class_picks(y)
    type2_grid(cvae, ellipsoids, x[picks], y[picks], path, radius="surface",
               generator=generator(seed, "cvae-health-sweep"), title=title)


def sweep_one(setting: str, profile: str, name: str, seed: int, out: Path, device, lr: float | None = None,
              epochs: int | None = None, ckpt_dir: Path | None = None, draw_only: bool = False) -> dict | None:
    tag = (f"-lr{lr:g}" if lr is not None else "") + (f"-ep{epochs}" if epochs is not None else "")
    path = out / f"{setting}-{profile}{tag}-{name}-seed{seed}.json"
    png = path.with_name(path.stem + "-type2.png")
    title = f"{setting} {profile}{tag} {name} seed {seed}: Type II on the 95 % ellipsoid"
    ckpt = None if ckpt_dir is None else Path(ckpt_dir) / path.with_suffix(".pt").name
    if draw_only:
        if not path.exists() or png.exists():
            return None
        if ckpt is None or not ckpt.exists():
            print(f"{path.name}: no checkpoint in --ckpt-dir to draw from", flush=True)
            return None
    elif path.exists():
        return json.loads(path.read_text())
    opts = dict(CONFIGS[name])
    cfg = RunConfig(id=setting, seed=seed, profile=profile)
    stage: Stage = cfg.prof.cvae
    stage = replace(stage, **{k: opts.pop(k) for k in ("optimizer", "lr", "batch_size") if k in opts})
    kl_warmup = opts.pop("kl_warmup", 0.0)
    lr_warmup = opts.pop("lr_warmup", 0)
    if lr is not None:          # a stress test: a larger step makes collapse more likely
        stage = replace(stage, lr=lr)
    if epochs is not None:
        stage = replace(stage, epochs=epochs)
    glorot = opts.pop("glorot", False)
    data = load_setting(cfg)
    x, y = data.x, data.y
    torch.manual_seed(seed)
    cvae = CVAE(int(y.max()) + 1, cfg.latent, sample_z=opts.get("sample_z", True),
                encoder_act=opts["encoder_act"]).to(device)
    if glorot:
        glorot_(cvae)
    if draw_only:                     # a finished entry: its final checkpoint is the trained CVAE
        cvae.load_state_dict(load_checkpoint(ckpt)["model"])
        draw_type2(cvae.cpu(), fit_ellipsoids(cvae.cpu(), x, y), x, y, seed, png, title)
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    hist = train_cvae(cvae, x.to(device), y.to(device), stage, ckpt, seed, progress=False, log=lambda m: None,
                      kl_warmup=kl_warmup, lr_warmup=lr_warmup)
    seconds = time.perf_counter() - t0
    ellipsoids = fit_ellipsoids(cvae, x.to(device), y.to(device))
    health = cvae_health(cvae, x, y, ellipsoids, seed=seed)
    draw_type2(cvae.cpu(), ellipsoids, x, y, seed, png, title)
    rec = {"id": setting, "profile": profile, "config": name, "seed": seed, "options": CONFIGS[name],
           "stage": asdict(stage), "kl_warmup_epochs": kl_warmup, "lr_warmup_steps": lr_warmup, "loss": hist["loss"], "seconds": round(seconds, 1),
           "epoch_seconds": [round(t, 1) for t in hist["seconds"]],
           "health": health, "device": str(device), "environment": environment(),
           "command": "python -m experiments.cvae_health_sweep"}
    atomic_write_json(path, rec)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--id", nargs="+", default=["mnist"], choices=list(D.SETTINGS))
    ap.add_argument("--profile", nargs="+", default=["quick"], choices=sorted(PROFILES))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=None, help="override the profile's CVAE learning rate")
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's CVAE epochs")
    ap.add_argument("--out", default="results/cvae_health")
    ap.add_argument("--ckpt-dir", default=None,
                    help="keep a per-epoch CVAE checkpoint here, so a long sweep (the paper profile) resumes "
                         "where it stopped; 'seconds' then counts this invocation only, 'epoch_seconds' every epoch")
    ap.add_argument("--draw-only", action="store_true",
                    help="train nothing: draw the Type II picture of finished entries from their --ckpt-dir checkpoints")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(a.device)
    for setting in a.id:
        for profile in a.profile:
            for seed in a.seeds:
                for name in a.configs:
                    rec = sweep_one(setting, profile, name, seed, out, device, a.lr, a.epochs, a.ckpt_dir,
                                    a.draw_only)
                    if rec is None:
                        continue
                    print(f"{setting} {profile} {name} seed {seed} ({rec['seconds']:.0f} s): "
                          f"{health_line(rec['health'])}", flush=True)


if __name__ == "__main__":
    main()
