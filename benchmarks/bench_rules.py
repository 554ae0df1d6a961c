"""Scoring throughput of every shipped score rule of a trained run, beside the baselines that
need more than one pass, on the same images in one process (CPU, batch 256):

* our rules through ``load_detector(run, rule).score`` (what ``oodgen score`` runs): p(n+1),
  max-in, ood-class+knn, reject+knn, reject+fisher;
* each statistic that reject+fisher combines, alone: feature KNN distance, CVAE likelihood
  (``nll``), likelihood minus zlib code length (``nll-complexity``), pixel KNN distance;
* the stage breakdown of the fused rules: classifier pass, feature KNN search, CVAE pass, zlib,
  pixel KNN search, the fusion arithmetic;
* baselines on the run's plain classifier (``checkpoints/plain.pt``, in the channels-last format
  that our scoring uses too, :mod:`oodgen.models.inference`): ODIN (T = 1000,
  eps = 0.0014) and Mahalanobis (eps = 0.0014) with input pre-processing, MC-dropout and mutual
  information (T = 50 passes, on n / 8 images: they are per-image rates), max-softmax.

Ratios are what count (images/s of a rule / images/s of ODIN, of Mahalanobis, of p(n+1)).

    python benchmarks/bench_rules.py [--run results/fmnist/oodgen/seed0] [--n 4096] \
        [--out benchmarks/results/rules.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from oodgen._runtime import tune_allocator  # noqa: E402
from oodgen.config import RunConfig  # noqa: E402
from oodgen.data import datasets as D  # noqa: E402
from oodgen.detectors.fusion import FISHER_RULE  # noqa: E402
from oodgen.detectors.image_stats import complexity_bits, cvae_nll_bits  # noqa: E402
from oodgen.detectors.oodgen import SCORES, nplus1_scores  # noqa: E402
from oodgen.detectors.posthoc import model_outputs  # noqa: E402
from oodgen.detectors.registry import make_detector  # noqa: E402
from oodgen.models import Fig6cCNN, as_inference  # noqa: E402
from oodgen.score import load_detector  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402

TARGET_VS_ODIN = 3.0
TARGET_VS_MAHA = 2.0
GOAL_VS_NPLUS1 = 1.5


def rate(fn, x: torch.Tensor, batch: int, repeats: int = 2) -> float:
    """Best-of-``repeats`` images/s of ``fn`` over ``x`` in batches (after one warm-up batch)."""
    fn(x[:batch])
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            fn(x[i:i + batch])
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def stage_seconds(det, x: torch.Tensor, batch: int) -> dict[str, float]:
    """Seconds per 1,000 images of each stage of reject+fisher (the rule that uses them all)."""
    t = {}

    def clock(name, fn):
        fn()
        t0 = time.perf_counter()
        out = fn()
        t[name] = 1e6 * (time.perf_counter() - t0) / len(x)
        return out

    out = clock("classifier pass (features + logits)",
                lambda: model_outputs(det.classifier, x, ("features", "logits"), batch))
    logits = torch.from_numpy(out["logits"])
    labels = logits[:, :det.n_classes].argmax(1)
    dist = clock("feature KNN search", lambda: det.fusion.distance(out["features"]))
    nll = clock("CVAE pass (nll)", lambda: cvae_nll_bits(det.cvae, x, labels, batch))
    bits = clock("zlib code length", lambda: complexity_bits(x))
    pix = clock("pixel KNN search", lambda: det.pixel_bank.distance(x))
    stats = {"nll": nll, "nll-complexity": nll - bits, "pixel-knn": pix}
    p = nplus1_scores(logits, "ood-class")
    clock("fusion arithmetic", lambda: det.fusion.combine_all(dist, p, (FISHER_RULE,), stats))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="results/fmnist/oodgen/seed0")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rules.json"))
    a = ap.parse_args()
    allocator = tune_allocator()       # as the oodgen command does; the same for every method
    run = Path(a.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    test = D.load(cfg.id, "test")
    x = torch.from_numpy(test.images[:a.n])
    train = D.load(cfg.id, "train")
    x_fit, y_fit = torch.from_numpy(train.images[:5000]), torch.from_numpy(train.labels[:5000]).long()

    rates: dict[str, float] = {}
    dets = {rule: load_detector(run, rule) for rule in SCORES}
    for rule, det in dets.items():
        rates[f"oodgen {rule}"] = rate(det.score, x, a.batch)

    full = dets[FISHER_RULE]

    def feature_knn(xb):
        return full.fusion.distance(model_outputs(full.classifier, xb, ("features",), a.batch)["features"])

    def nll(xb):
        labels = full.logits(xb)[:, :full.n_classes].argmax(1)
        return cvae_nll_bits(full.cvae, xb, labels, a.batch)

    rates["statistic feature-knn (classifier + search)"] = rate(feature_knn, x, a.batch)
    rates["statistic nll (classifier for the class + CVAE)"] = rate(nll, x, a.batch)
    rates["statistic nll-complexity (+ zlib)"] = rate(lambda xb: nll(xb) - complexity_bits(xb), x, a.batch)
    rates["statistic pixel-knn (search only)"] = rate(full.pixel_bank.distance, x, a.batch)

    plain = Fig6cCNN(full.n_classes)
    plain.load_state_dict(torch.load(run / "checkpoints" / "plain.pt", map_location="cpu",
                                     weights_only=True)["model"])
    as_inference(plain)       # the same eval-mode, channels-last format our scoring uses
    baselines = {
        "odin (T=1000, eps=0.0014)": make_detector("odin", plain, temperature=1000.0, eps=0.0014),
        "mahalanobis (eps=0.0014, pre-processing)": make_detector("mahalanobis", plain, eps=0.0014),
        "max-softmax": make_detector("msp", plain),
        f"mc-dropout (T={a.passes})": make_detector("mc-dropout", plain, n_passes=a.passes),
        f"mutual-info (T={a.passes})": make_detector("mutual-info", plain, n_passes=a.passes),
    }
    for name, det in baselines.items():
        det.fit(x_fit, y_fit)
        xs = x[:max(a.batch, a.n // 8)] if name.startswith(("mc-", "mutual")) else x
        rates[name] = rate(det.score, xs, a.batch)

    odin = rates["odin (T=1000, eps=0.0014)"]
    maha = rates["mahalanobis (eps=0.0014, pre-processing)"]
    ours = rates["oodgen ood-class"]
    rules = {r: {"images_per_s": rates[f"oodgen {r}"],
                 "x_odin": rates[f"oodgen {r}"] / odin, "x_mahalanobis": rates[f"oodgen {r}"] / maha,
                 "cost_vs_nplus1": ours / rates[f"oodgen {r}"]} for r in SCORES}
    for r in rules.values():
        r["meets_targets"] = bool(r["x_odin"] >= TARGET_VS_ODIN and r["x_mahalanobis"] >= TARGET_VS_MAHA)
    out = {
        "run": str(run), "id": cfg.id, "n": a.n, "batch": a.batch, "allocator_tuned": allocator,
        "images_per_s": rates, "rules": rules,
        "stages_ms_per_1000": stage_seconds(full, x, a.batch),
        "banks": {"feature": list(full.fusion.knn_.bank_.shape), "feature_k": int(full.fusion.knn_.k),
                  "pixel": list(full.pixel_bank.images.shape), "pixel_k": int(full.pixel_bank.k)},
        "targets": {"x_odin": TARGET_VS_ODIN, "x_mahalanobis": TARGET_VS_MAHA, "goal_cost_vs_nplus1": GOAL_VS_NPLUS1},
        "environment": environment(),
        "command": "python benchmarks/bench_rules.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)
    for name, v in rates.items():
        print(f"{name:50s} {v:9.0f} img/s  {v / odin:5.2f}x ODIN")
    print(json.dumps(out["stages_ms_per_1000"], indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
