"""Scoring throughput of every shipped score rule of a trained run, beside the baselines that
need more than one pass, on the same images in one process (CPU, batch 256):

* our rules through ``load_detector(run, rule, precision).score`` (what ``oodgen score`` runs):
  every rule of ``SCORES`` (p(n+1), max-in, the fused rules, both pixel guards), each in float32 and in bfloat16
  (:mod:`oodgen.models.inference`; the default is float32, ``"auto"`` picks bfloat16 on a CPU with
  AMX), and every rule's AUROC on the setting's OOD sets in both precisions;
* each statistic that reject+fisher combines, alone: feature KNN distance, CVAE likelihood
  (``nll``), likelihood minus zlib code length (``nll-complexity``), pixel KNN distance;
* the stage breakdown of the fused rules: classifier pass, feature KNN search, CVAE pass, zlib,
  pixel KNN search, the class-conditional pixel KNN search (the recommended guard's), the fusion
  arithmetic;
* baselines on the run's plain classifier (``checkpoints/plain.pt``, in the channels-last format
  that our scoring uses too, :mod:`oodgen.models.inference`): ODIN (T = 1000,
  eps = 0.0014) and Mahalanobis (eps = 0.0014) with input pre-processing, MC-dropout and mutual
  information (T = 50 passes, on n / 8 images: they are per-image rates), max-softmax.

Ratios are what count (images/s of a rule / images/s of ODIN, of Mahalanobis, of p(n+1)).  Every
method is timed in the same rounds, round-robin, best of three, so a drift of the machine's speed
during the run falls on all of them alike.

    python benchmarks/bench_rules.py [--run results/fmnist/oodgen/seed2] [--n 4096] \
        [--auroc-n 5000] [--out benchmarks/results/rules.json]

(the run needs its checkpoints: a run trained on this machine, not only its committed JSON)
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
from oodgen.metrics import ood_metrics  # noqa: E402
from oodgen.models import Fig6cCNN, as_inference, resolve_precision  # noqa: E402
from oodgen.score import load_detector  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402

TARGET_VS_ODIN = 3.0
TARGET_VS_MAHA = 2.0
GOAL_VS_NPLUS1 = 1.5


def rates_interleaved(jobs: dict, batch: int, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` images/s of each job ``name -> (fn, x)``, timed round-robin (one pass of
    every job per round, after one warm-up batch each), so that a drift in the machine's speed
    (another tenant, frequency) lands on every method alike instead of on whichever ran last."""
    for fn, x in jobs.values():
        fn(x[:batch])
    best = dict.fromkeys(jobs, 0.0)
    for _ in range(rounds):
        for name, (fn, x) in jobs.items():
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                fn(x[i:i + batch])
            best[name] = max(best[name], len(x) / (time.perf_counter() - t0))
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
                lambda: model_outputs(det.inference_classifier(), x, ("features", "logits"), batch))
    logits = torch.from_numpy(out["logits"])
    labels = logits[:, :det.n_classes_].argmax(1)
    dist = clock("feature KNN search", lambda: det.fusion_.distance(out["features"]))
    nll = clock("CVAE pass (nll)", lambda: cvae_nll_bits(det.stats_cvae(), x, labels, batch))
    bits = clock("zlib code length", lambda: complexity_bits(x))
    pix = clock("pixel KNN search", lambda: det.pixel_bank_.distance(x))
    if getattr(det, "class_pixel_bank_", None) is not None:     # the recommended guard's search
        clock("class pixel KNN search", lambda: det.class_pixel_bank_.distance(x, labels))
    stats = {"nll": nll, "nll-complexity": nll - bits, "pixel-knn": pix}
    p = nplus1_scores(logits, "ood-class")
    clock("fusion arithmetic", lambda: det.fusion_.combine_all(dist, p, (FISHER_RULE,), stats))
    return t


def auroc_by_precision(run: Path, cfg: RunConfig, precisions, n: int) -> dict:
    """AUROC of every rule on the setting's test images vs each OOD set (``n`` images each, the run's
    seed), scored through ``load_detector(run, rule, precision)`` in each precision."""
    test = torch.from_numpy(D.load(cfg.id, "test", n=n).images)
    metrics = json.loads((run / "metrics.json").read_text())
    sets = {name: torch.from_numpy(D.load(name, "test", n=n, seed=cfg.seed,
                                          sphere_radius=float(metrics["sphere_radius"])).images)
            for name in metrics["ood"]}
    out: dict = {}
    for prec in precisions:
        out[prec] = {}
        for rule in SCORES:
            det = load_detector(run, rule, prec)
            s_in = det.score(test)
            out[prec][rule] = {name: ood_metrics(s_in, det.score(x))["auroc"]
                               for name, x in sets.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="results/fmnist/oodgen/seed2")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--auroc-n", type=int, default=5000,
                    help="images per set of the AUROC comparison between precisions (0: skip it)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="precisions our rules are timed in (fp32 always; bf16 is emulated, so very slow, on a "
                         "CPU without AVX-512 BF16 or AMX)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rules.json"))
    a = ap.parse_args()
    allocator = tune_allocator()       # as the oodgen command does; the same for every method
    run = Path(a.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    test = D.load(cfg.id, "test")
    x = torch.from_numpy(test.images[:a.n])
    train = D.load(cfg.id, "train")
    x_fit, y_fit = torch.from_numpy(train.images[:5000]), torch.from_numpy(train.labels[:5000]).long()
    default = "fp32"                            # load_detector / oodgen score default
    auto = resolve_precision("auto")            # what --precision auto picks on this machine
    precisions = list(dict.fromkeys(["fp32", *a.precisions]))

    jobs: dict[str, tuple] = {}             # name -> (score function, images); timed together below
    stages: dict[str, dict] = {}
    for prec in precisions:
        dets = {rule: load_detector(run, rule, prec) for rule in SCORES}
        for rule, det in dets.items():
            jobs[f"oodgen {rule} [{prec}]"] = (det.score, x)
        full = dets[FISHER_RULE]

        def feature_knn(xb, full=full):
            return full.fusion_.distance(model_outputs(full.inference_classifier(), xb, ("features",), a.batch)["features"])

        def nll(xb, full=full):
            labels = full.logits(xb)[:, :full.n_classes_].argmax(1)
            return cvae_nll_bits(full.stats_cvae(), xb, labels, a.batch)

        jobs[f"statistic feature-knn (classifier + search) [{prec}]"] = (feature_knn, x)
        jobs[f"statistic nll (classifier for the class + CVAE) [{prec}]"] = (nll, x)
        jobs[f"statistic nll-complexity (+ zlib) [{prec}]"] = (lambda xb, nll=nll: nll(xb) - complexity_bits(xb), x)
        stages[prec] = stage_seconds(full, x, a.batch)
    jobs["statistic pixel-knn (search only)"] = (full.pixel_bank_.distance, x)

    plain = Fig6cCNN(full.n_classes_)
    plain.load_state_dict(torch.load(run / "checkpoints" / "plain.pt", map_location="cpu",
                                     weights_only=True)["model"])
    as_inference(plain)       # the same eval-mode, channels-last format our scoring uses
    odin_name = "odin (T=1000, eps=0.0014)"
    maha_name = "mahalanobis (eps=0.0014, pre-processing)"
    baselines = {
        odin_name: make_detector("odin", plain, temperature=1000.0, eps=0.0014),
        maha_name: make_detector("mahalanobis", plain, eps=0.0014),
        "max-softmax": make_detector("msp", plain),
        f"mc-dropout (T={a.passes})": make_detector("mc-dropout", plain, n_passes=a.passes),
        f"mutual-info (T={a.passes})": make_detector("mutual-info", plain, n_passes=a.passes),
    }
    for name, det in baselines.items():
        det.fit(x_fit, y_fit)
        xs = x[:max(a.batch, a.n // 8)] if name.startswith(("mc-", "mutual")) else x
        jobs[name] = (det.score, xs)

    # Reference only (not a shipped configuration): ODIN with its three passes under bf16 autocast,
    # to show how much of our bf16 gain a pre-processing baseline could also take.
    def odin_bf16(xb):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return baselines[odin_name].score(xb)
    if "bf16" in precisions:
        jobs["odin under bf16 autocast (reference, not shipped)"] = (odin_bf16, x)
    rates = rates_interleaved(jobs, a.batch)

    odin, maha = rates[odin_name], rates[maha_name]
    rules = {}
    for prec in precisions:
        ours = rates[f"oodgen ood-class [{prec}]"]
        for r in SCORES:
            v = rates[f"oodgen {r} [{prec}]"]
            rules[f"{r} [{prec}]"] = {"rule": r, "precision": prec, "default_here": prec == default,
                                      "auto_here": prec == auto,
                                      "images_per_s": v, "x_odin": v / odin, "x_mahalanobis": v / maha,
                                      "cost_vs_nplus1_fp32": rates["oodgen ood-class [fp32]"] / v,
                                      "cost_vs_nplus1_same_precision": ours / v,
                                      "meets_targets": bool(v / odin >= TARGET_VS_ODIN and v / maha >= TARGET_VS_MAHA)}
    # What reject+fisher can reach at best: its two network passes (classifier, CVAE) are the
    # statistic's definition; with every other stage (searches, zlib, arithmetic) free, the rule still
    # costs their sum, so ODIN's cost over that sum bounds its speed ratio to ODIN.
    odin_ms = 1e6 / odin
    bound = {prec: {"classifier_plus_cvae_ms_per_1000": st["classifier pass (features + logits)"] + st["CVAE pass (nll)"],
                    "max_x_odin": odin_ms / (st["classifier pass (features + logits)"] + st["CVAE pass (nll)"])}
             for prec, st in stages.items()}
    auroc = auroc_by_precision(run, cfg, precisions, a.auroc_n) if a.auroc_n else None
    auroc_diff = None
    if auroc and "bf16" in auroc:
        auroc_diff = {r: max(abs(auroc["bf16"][r][s] - auroc["fp32"][r][s]) for s in auroc["fp32"][r]) for r in SCORES}
    out = {
        "run": str(run), "id": cfg.id, "n": a.n, "batch": a.batch, "allocator_tuned": allocator,
        "default_precision": default, "auto_precision": auto, "images_per_s": rates, "rules": rules,
        "stages_ms_per_1000": stages, "odin_ms_per_1000": odin_ms, "reject_fisher_bound": bound,
        "auroc_by_precision": auroc, "auroc_n": a.auroc_n, "max_abs_auroc_diff_bf16_vs_fp32": auroc_diff,
        "banks": {"feature": list(full.fusion_.knn_.bank_.shape), "feature_k": int(full.fusion_.knn_.k),
                  "pixel": list(full.pixel_bank_.images.shape), "pixel_k": int(full.pixel_bank_.k),
                  **({"class_pixel": {c: list(b.images.shape) for c, b in full.class_pixel_bank_.banks.items()},
                      "class_pixel_k": sorted({int(b.k) for b in full.class_pixel_bank_.banks.values()})}
                     if getattr(full, "class_pixel_bank_", None) is not None else {})},
        "detector_file_bytes": (run / "detector.pt").stat().st_size if (run / "detector.pt").is_file() else None,
        "targets": {"x_odin": TARGET_VS_ODIN, "x_mahalanobis": TARGET_VS_MAHA, "goal_cost_vs_nplus1": GOAL_VS_NPLUS1},
        "environment": environment(),
        "command": "python benchmarks/bench_rules.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)
    for name, v in rates.items():
        print(f"{name:60s} {v:9.0f} img/s  {v / odin:5.2f}x ODIN")
    print(json.dumps(out["stages_ms_per_1000"], indent=1))
    print("reject+fisher bound (classifier + CVAE passes only):", json.dumps(bound))
    if auroc_diff:
        print("max |AUROC bf16 - fp32| per rule:", json.dumps(auroc_diff))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
