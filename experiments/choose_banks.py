"""Choose the sizes of the two nearest-neighbour banks behind the fused score rules without any
test OOD set: the feature bank (classifier features of the training images, ``ood-class+knn``,
``reject+knn``, ``reject+fisher``) and the pixel bank (``pixel-knn``, ``reject+fisher``).

A bank of a random fraction f of the training set, searched with k = max(1, round(f * 50))
neighbours, estimates the same quantile of the neighbour distances as the full bank with
k = 50 (Sun et al., ICML 2022, section 4.3 subsample the bank this way).  It is f times cheaper.
For each finished run (its ``detector.pt`` holds the classifier and the CVAE) and each
candidate size this script measures, on in-distribution validation images and the run's
panel of generated outliers only (:mod:`oodgen.generate.panel`):

* ``spearman``: the rank correlation of the distances with the full bank's, over validation and
  panel images together (how faithfully the small bank orders images);
* ``panel_auroc``: the statistic's mean AUROC, validation vs each panel component.

The chosen size is the smallest candidate with spearman >= 0.98 and a panel AUROC no more than
0.05 points below the full bank's, on every run given.  Nothing here reads a test OOD set.

    python -m experiments.choose_banks results/{mnist,fmnist,mnist0-4,fmnist0-4}/oodgen/seed0 \
        --out results/ablation/bank_choice.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from oodgen.config import RunConfig
from oodgen.detectors.fusion import FEATURE_K, FeatureKNNFusion
from oodgen.detectors.image_stats import PIXEL_K, REFERENCE_BANK, PixelBank, scaled_k
from oodgen.detectors.knn import KNN
from oodgen.detectors.posthoc import model_outputs
from oodgen.generate.panel import generated_panel
from oodgen.metrics import ood_metrics
from oodgen.run import load_setting
from oodgen.score import load_detector
from oodgen.train import fit_ellipsoids
from oodgen.utils import atomic_write_json, environment

FEATURE_FRACTIONS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
PIXEL_SIZES = (REFERENCE_BANK, 10000, 5000, 3000, 2000, 1000)
MIN_SPEARMAN = 0.98
MAX_AUROC_DROP = 0.05


def ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def evaluate(values: dict[str, np.ndarray], full: dict[str, np.ndarray]) -> dict:
    """values / full: {"val": ..., <panel component>: ...} distances of a candidate / the full bank."""
    parts = list(values)
    comps = [p for p in parts if p != "val"]
    aurocs = {c: ood_metrics(values["val"], values[c])["auroc"] for c in comps}
    return {"spearman": spearman(np.concatenate([values[p] for p in parts]),
                                 np.concatenate([full[p] for p in parts])),
            "panel_auroc": aurocs, "panel_mean_auroc": float(np.mean(list(aurocs.values())))}


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def study_run(run_dir: Path) -> dict:
    det = load_detector(run_dir, "reject+fisher")
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    data = load_setting(cfg)
    x, y, xv, yv = data.x, data.y, data.x_val, data.y_val
    cvae = det.stats_cvae()
    panel = generated_panel(cvae, fit_ellipsoids(cvae, x, y), xv, yv, cfg.seed)
    images = {"val": xv, **panel}
    feats = {p: model_outputs(det.inference_classifier(), im, ("features",))["features"] for p, im in images.items()}
    train_feats = model_outputs(det.inference_classifier(), x, ("features",))["features"]
    feature_rows, full_f = [], None
    for frac in FEATURE_FRACTIONS:
        # exactly the bank and k a run with this fraction uses
        bank = train_feats[FeatureKNNFusion(bank_fraction=frac, seed=cfg.seed).bank_indices(len(train_feats))]
        k = scaled_k(FEATURE_K, len(bank), len(train_feats))
        knn = KNN(None, k=k).fit_outputs(features=bank)
        vals, secs = {}, 0.0
        for p, f in feats.items():
            vals[p], dt = timed(lambda f=f: knn.score_outputs(features=f))
            secs += dt
        full_f = full_f or vals
        n_img = sum(len(v) for v in vals.values())
        feature_rows.append({"fraction": frac, "size": len(bank), "k": k,
                             "ms_per_1000_images": 1e6 * secs / n_img, **evaluate(vals, full_f)})
    pixel_rows, full_p = [], None
    n_full = min(REFERENCE_BANK, len(x))
    for size in (n_full, *PIXEL_SIZES[1:]):
        bank = PixelBank.from_training_set(x, cfg.seed, size=size, k=scaled_k(PIXEL_K, size, n_full))
        vals, secs = {}, 0.0
        for p, im in images.items():
            vals[p], dt = timed(bank.distance, im)
            secs += dt
        full_p = full_p or vals
        n_img = sum(len(v) for v in vals.values())
        pixel_rows.append({"size": len(bank.images), "candidate": size if size != n_full else "full", "k": bank.k, "ms_per_1000_images": 1e6 * secs / n_img,
                           **evaluate(vals, full_p)})
    return {"run": str(run_dir), "id": cfg.id, "seed": cfg.seed, "n_validation": len(xv),
            "panel_components": list(panel), "feature_bank": feature_rows, "pixel_bank": pixel_rows}


def choose(runs: list[dict], key: str, size_key: str):
    """Smallest candidate meeting both criteria on every run (candidates by position: the first
    is each run's full bank)."""
    chosen = runs[0][key][0][size_key]
    for i in range(len(runs[0][key])):
        ok = True
        for r in runs:
            full, row = r[key][0], r[key][i]
            ok &= row["spearman"] >= MIN_SPEARMAN
            ok &= row["panel_mean_auroc"] >= full["panel_mean_auroc"] - MAX_AUROC_DROP
        if ok:
            chosen = runs[0][key][i][size_key] if i else "full"
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run directories (with detector.pt and config.json)")
    ap.add_argument("--out", default="results/ablation/bank_choice.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    runs = []
    for r in a.runs:
        print(f"studying {r} ...", flush=True)
        runs.append(study_run(Path(r)))
        atomic_write_json(Path(a.out).with_suffix(".partial.json"), {"runs": runs})
        for key in ("feature_bank", "pixel_bank"):
            for row in runs[-1][key]:
                print(f"  {key} size {row['size']:6d} k {row['k']:2d}: spearman {row['spearman']:.4f} "
                      f"panel AUROC {row['panel_mean_auroc']:.3f}  {row['ms_per_1000_images']:.1f} ms/1000",
                      flush=True)
    out = {"criterion": f"smallest size with spearman >= {MIN_SPEARMAN} (validation + panel, vs the full bank) "
                        f"and panel mean AUROC >= full - {MAX_AUROC_DROP}, on every run; no test OOD set read",
           "chosen": {"feature_fraction": choose(runs, "feature_bank", "fraction"),
                      "pixel_size": choose(runs, "pixel_bank", "candidate")},
           "runs": runs, "environment": environment(),
           "command": "python -m experiments.choose_banks " + " ".join(sys.argv[1:])}
    atomic_write_json(a.out, out)
    print(json.dumps(out["chosen"]))


if __name__ == "__main__":
    main()
