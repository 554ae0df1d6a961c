"""Leave-one-class-out: a near-OOD validation signal that uses no test OOD set.

To choose between recipes (our defaults, the authors' complete recipe, the paper's) on the
near sets where p(n+1) falls short, the outliers of the check must be *semantically* new, not
made by either recipe's generator (a generated panel cannot tell them apart: docs/results.md,
"held-out-generator check").  For each class c of the setting's **training** split:

* the detector (:class:`oodgen.detectors.oodgen.OODGen`, one recipe) is fitted on the run's
  training images of every other class (relabelled 0..n-2);
* it scores the run's validation images of the other classes (in-distribution) and every
  training-split image of class c (the outliers: never trained on);
* the AUROC (%) of p(n+1), of 1 - max p_in, and the CVAE's health are written to
  ``OUT/<id>-<profile>-<recipe>-class<c>-seed<k>.json`` (a finished file is skipped: resumable),
  and its Type II samples beside training images to ``...-type2.png`` (look at them first).

With ``--ckpt-dir DIR`` each fold trains with per-epoch checkpoints in ``DIR/<the JSON's stem>/``
(:class:`~oodgen.detectors.oodgen.OODGen`'s ``checkpoint_dir``), so a fold cut off mid-training
resumes where it stopped instead of starting again; its ``seconds`` then count only the last
invocation and ``resumed`` says so.

The test split and the test OOD sets are never read.  The criterion: the mean AUROC of p(n+1)
over the classes run for both recipes.

    python -m experiments.leave_class_out --id fmnist --recipes ours authors --classes 0 1 --profile quick \
        --out results/ablation/leave-class-out --ckpt-dir /tmp/lco-ckpt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from oodgen import data as D
from oodgen.config import PROFILES, RunConfig, Variant
from oodgen.detectors.oodgen import OODGen, nplus1_scores
from oodgen.generate.health import health_line
from oodgen.metrics import ood_metrics
from oodgen.report import class_picks, type2_grid
from oodgen.run import train_val_split
from oodgen.utils import atomic_write_json, environment, generator

RECIPES = {       # as this experiment ran them: the paper's linear last layer
    "paper": {"head": "linear"},
    "ours": {"beta": "wide", "clip_type1": "half", "head": "linear"},
    "authors": {"encoder_act": "relu", "kl_warmup": 0.0, "sample_z": False, "nullspace": "rref",
                "beta": "authors", "type2_radius": "shell", "sphere_radius": "authors", "head": "linear"},
}


def fold(setting: str, recipe: str, c: int, profile: str, seed: int, out: Path,
         ckpt_dir: Path | None = None) -> dict:
    path = out / f"{setting}-{profile}-{recipe}-class{c}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = RunConfig(id=setting, seed=seed, profile=profile)
    train = D.load(setting, "train")
    x, y = train.images, train.labels
    prof = PROFILES[profile]
    if prof.n_train is not None:
        x, y = x[:prof.n_train], y[:prof.n_train]
    tr, va = train_val_split(len(x))              # the split oodgen run uses
    keep = y[tr] != c
    relabel = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    relabel[[k for k in range(len(relabel)) if k != c]] = np.arange(len(relabel) - 1)
    xtr, ytr = torch.from_numpy(x[tr][keep]), torch.from_numpy(relabel[y[tr][keep]])
    x_in = torch.from_numpy(x[va][y[va] != c])
    x_out = torch.from_numpy(x[y == c])          # every training-split image of the held-out class
    variant = Variant(**RECIPES[recipe])
    fold_ckpt = ckpt_dir / path.stem if ckpt_dir is not None else None
    resumed = fold_ckpt is not None and fold_ckpt.is_dir() and any(fold_ckpt.iterdir())
    t0 = time.perf_counter()
    det = OODGen(latent_dim=cfg.latent, profile=profile, variant=variant, score="ood-class", seed=seed,
                 checkpoint_dir=None if fold_ckpt is None else str(fold_ckpt),
                 progress=False, verbose=False).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    # what the generator generates, to be looked at before the AUROC is believed: 4 training images
    # and 4 Type II outliers per class, beside each other (the Figure 3 layout)
    picks = class_picks(ytr)
    type2_grid(det.cvae_, det.ellipsoids_, xtr[picks], ytr[picks], path.with_name(path.stem + "-type2.png"),
               radius=variant.type2_radius, generator=generator(seed, "leave-class-out", c),
               title=f"{setting} without class {c}, {recipe}: Type II ({variant.type2_radius})")
    l_in, l_out = det.logits(x_in), det.logits(x_out)
    res = {rule: ood_metrics(nplus1_scores(l_in, rule), nplus1_scores(l_out, rule))
           for rule in ("ood-class", "max-in")}
    rec = {"id": setting, "profile": profile, "recipe": recipe, "variant": RECIPES[recipe],
           "variant_full": asdict(variant), "held_out_class": c,
           "seed": seed, "n_train": len(xtr), "n_in": len(x_in), "n_out": len(x_out), "metrics": res,
           "cvae_health": {k: det.cvae_health_.get(k) for k in ("active_dims", "recon_ratio", "spread_ratio",
                                                              "collapsed")},
           "health_line": health_line(det.cvae_health_), "seconds": round(seconds, 1), "resumed": resumed,
           "command": "python -m experiments.leave_class_out " + " ".join(sys.argv[1:]), "environment": environment(),
           "note": "training split only: the held-out class's training images vs the other classes' validation "
                   "images; no test split, no test OOD set"}
    atomic_write_json(path, rec)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--id", default="fmnist", choices=["mnist", "fmnist"])
    ap.add_argument("--recipes", nargs="+", default=["ours", "authors"], choices=list(RECIPES))
    ap.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    ap.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/ablation/leave-class-out")
    ap.add_argument("--ckpt-dir", type=Path, default=None,
                    help="per-fold training checkpoints here, so an interrupted fold resumes (default: none)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for c in a.classes:                  # class-major: both recipes of a class land together
        for recipe in a.recipes:
            rec = fold(a.id, recipe, c, a.profile, a.seed, out, a.ckpt_dir)
            m = rec["metrics"]
            print(f"{a.id} {a.profile} {recipe:>8} class {c}: AUROC p(n+1) {m['ood-class']['auroc']:.1f}, "
                  f"max-in {m['max-in']['auroc']:.1f}; {rec['health_line']} ({rec['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
