"""Choosing the recommended score without test data: the protocol of ``docs/protocol.md``.

Candidates are (recipe, score) pairs (:data:`RECIPES` x :data:`CANDIDATE_SCORES`).  Each
leave-one-class-out fold (:data:`FOLD_SETTINGS` x :data:`FOLD_CLASSES`) trains one detector per
recipe on the training split without class ``c`` and scores three signals against held-out
in-distribution validation images: the held-out class (``held-out``), the same validation images
inverted (``invert``) and with their pixels shuffled (``pixel-shuffle``).  No test split and no test
OOD set is read.  The criterion is each candidate's worst AUROC over every signal of every fold; among
the candidates within :data:`TIE_POINTS` of the best, the fastest score wins (:func:`decide`).

    oodgen select --out results/selection
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .config import LATENT_DIMS, PROFILES, Variant
from .detectors.fusion import FISHER_LITE_STATS, fisher_score
from .detectors.image_stats import STATS
from .detectors.oodgen import SCORES, OODGen
from .generate.health import health_line
from .metrics import ood_metrics
from .run import train_val_split
from .utils import atomic_write_bytes, atomic_write_json, environment, generator

RECIPES: dict[str, dict] = {
    "ours": {"beta": "wide", "clip_type1": "half"},
    "authors": {"encoder_act": "relu", "kl_warmup": 0.0, "sample_z": False, "nullspace": "rref",
                "beta": "authors", "type2_radius": "shell", "sphere_radius": "authors"},
}
FOLD_SETTINGS = ("mnist", "fmnist")
FOLD_CLASSES = (0, 1, 2, 3, 4)
SIGNALS = ("held-out", "invert", "pixel-shuffle")
LITE_RULE = "reject+fisher-lite"
STATISTICS = ("feature-knn",) + STATS
# the protocol's order (feature-knn, now also a shipped rule, is listed once, among the statistics)
CANDIDATE_SCORES = tuple(r for r in SCORES if r not in STATISTICS) + (LITE_RULE,) + STATISTICS
N_HELD_OUT = 2000
TIE_POINTS = 0.2
PROFILE = "quick"
SEED = 0
# The stages each candidate needs, for the speed of one that benchmarks/bench_rules.py does not time.
LITE_STAGES = ("classifier pass (features + logits)", "feature KNN search", "pixel KNN search", "fusion arithmetic")


def shifted(x: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """The ``invert`` (1 - x) or ``pixel-shuffle`` (each image's pixels permuted by its own seeded
    permutation, channels kept together) version of images ``x`` (N, C, H, W)."""
    if kind == "invert":
        return 1.0 - x
    if kind == "pixel-shuffle":
        n, c, h, w = x.shape
        g = generator(seed, "pixel-shuffle")
        order = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
        flat = x.reshape(n, c, h * w)
        return torch.gather(flat, 2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)
    raise ValueError(f"unknown shift {kind!r}; use invert or pixel-shuffle")


def fold_path(out: Path, setting: str, recipe: str, c: int, profile: str = PROFILE, seed: int = SEED) -> Path:
    return Path(out) / f"{setting}-{profile}-{recipe}-class{c}-seed{seed}.json"


def candidate_scores(det: OODGen, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every candidate score of images ``x`` under a fitted and calibrated detector."""
    s = det.score_all(x, SCORES, components=True)
    s[LITE_RULE] = fisher_score(det.fusion_, s["feature-knn"], s["ood-class"], s, FISHER_LITE_STATS)
    return s


def fold_data(setting: str, c: int, profile: str, seed: int, data_dir=None):
    """(train x, train y relabelled, calibration x, in-distribution x and y, held-out-class x) of a fold:
    the training split only (test split and test OOD sets are never read)."""
    train = D.load(setting, "train", data_dir)
    x, y = train.images, train.labels
    n_train = PROFILES[profile].n_train
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    tr, va = train_val_split(len(x))
    classes = [k for k in range(int(y.max()) + 1) if k != c]
    relabel = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    keep = y[tr] != c
    xtr, ytr = x[tr][keep], relabel[y[tr][keep]]
    xv, yv = x[va][y[va] != c], relabel[y[va][y[va] != c]]
    perm = np.random.default_rng(seed).permutation(len(xv))
    half = len(xv) // 2
    calib, inside = np.sort(perm[:half]), np.sort(perm[half:])
    out = x[tr][y[tr] == c]
    out = out[np.sort(np.random.default_rng(seed + 1).permutation(len(out))[:N_HELD_OUT])]
    t = torch.from_numpy
    return t(xtr), t(ytr), t(xv[calib]), t(xv[inside]), t(yv[inside]), t(out)


def run_fold(setting: str, recipe: str, c: int, out, *, profile: str = PROFILE, seed: int = SEED,
             ckpt_dir=None, data_dir=None, log=print) -> dict:
    """Train one recipe without class ``c`` of ``setting`` and write every candidate's metrics on every
    signal to :func:`fold_path` (a finished fold is read back, not run again)."""
    path = fold_path(out, setting, recipe, c, profile, seed)
    if path.exists():
        return json.loads(path.read_text())
    from .report import class_picks, type2_grid
    xtr, ytr, x_calib, x_in, y_in, x_out = fold_data(setting, c, profile, seed, data_dir)
    variant = Variant(**RECIPES[recipe])
    fold_ckpt = Path(ckpt_dir) / path.stem if ckpt_dir is not None else None
    resumed = fold_ckpt is not None and fold_ckpt.is_dir() and any(fold_ckpt.iterdir())
    t0 = time.perf_counter()
    det = OODGen(latent_dim=LATENT_DIMS[setting], profile=profile, variant=variant, score="ood-class", seed=seed,
                 checkpoint_dir=None if fold_ckpt is None else str(fold_ckpt)).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    picks = class_picks(ytr)
    type2_grid(det.cvae_, det.ellipsoids_, xtr[picks], ytr[picks], path.with_name(path.stem + "-type2.png"),
               radius=variant.type2_radius, generator=generator(seed, "selection", c),
               title=f"{setting} without class {c}, {recipe}: Type II ({variant.type2_radius})")
    det.calibrate(x_calib, x_train=xtr)
    t1 = time.perf_counter()
    s_in = candidate_scores(det, x_in)
    signals = {"held-out": x_out, "invert": shifted(x_in, "invert", seed),
               "pixel-shuffle": shifted(x_in, "pixel-shuffle", seed)}
    metrics: dict[str, dict] = {name: {} for name in CANDIDATE_SCORES}
    for sig, images in signals.items():
        s_out = candidate_scores(det, images)
        for name in CANDIDATE_SCORES:
            metrics[name][sig] = ood_metrics(s_in[name], s_out[name])
    accuracy = float((det.predict_class(x_in) == y_in.numpy()).mean() * 100)
    rec = {"id": setting, "profile": profile, "recipe": recipe, "variant": RECIPES[recipe],
           "variant_full": asdict(variant), "held_out_class": c, "seed": seed,
           "n_train": len(xtr), "n_calibration": len(x_calib), "n_in": len(x_in), "n_held_out": len(x_out),
           "accuracy_in": accuracy, "metrics": metrics,
           "cvae_health": {k: det.cvae_health_.get(k) for k in ("active_dims", "latent_dim", "recon_ratio",
                                                              "spread_ratio", "collapsed")},
           "health_line": health_line(det.cvae_health_), "training_s": round(seconds, 1),
           "scoring_s": round(time.perf_counter() - t1, 1), "resumed": resumed,
           "command": " ".join(sys.argv), "environment": environment(),
           "note": "docs/protocol.md: training split only (the held-out class's training images and the other "
                   "classes' validation images, inverted and pixel-shuffled); no test split, no test OOD set"}
    atomic_write_json(path, rec)
    log(f"{setting} {recipe:>8} class {c}: {rec['health_line']}; accuracy {accuracy:.2f} %; AUROC held-out "
        f"p(n+1) {metrics['ood-class']['held-out']['auroc']:.1f}, reject+fisher "
        f"{metrics['reject+fisher']['held-out']['auroc']:.1f} ({seconds:.0f} s training)")
    return rec


def score_speeds(rules_json) -> dict[str, float]:
    """Images/s in float32 of every candidate score, from a ``benchmarks/bench_rules.py`` result."""
    r = json.loads(Path(rules_json).read_text())
    ips = r["images_per_s"]
    out = {}
    for name in SCORES:
        if f"oodgen {name} [fp32]" in ips:       # feature-knn: the statistic's own timing, below
            out[name] = float(ips[f"oodgen {name} [fp32]"])
    for key, v in ips.items():
        if key.startswith("statistic ") and ("[fp32]" in key or "search only" in key):
            out[key.split()[1]] = float(v)
    stages = r["stages_ms_per_1000"]["fp32"]
    out[LITE_RULE] = 1000.0 * 1000.0 / sum(float(stages[s]) for s in LITE_STAGES)
    missing = [s for s in CANDIDATE_SCORES if s not in out]
    if missing:
        raise ValueError(f"{rules_json}: no speed for {missing}")
    return out


def decide(records: list[dict], speeds: dict[str, float]) -> dict:
    """The protocol's decision from every fold's record: worst AUROC over the signals per candidate, the
    best worst case, the candidates within :data:`TIE_POINTS` of it, and the fastest of those (then the
    higher mean, then the recipe ``ours``)."""
    table: dict[str, dict] = {}
    for recipe in RECIPES:
        mine = [r for r in records if r["recipe"] == recipe]
        for name in CANDIDATE_SCORES:
            values = {f"{r['id']}/class{r['held_out_class']}/{sig}": r["metrics"][name][sig]["auroc"]
                      for r in mine for sig in SIGNALS}
            worst_signal = min(values, key=values.get)
            table[f"{recipe}/{name}"] = {"recipe": recipe, "score": name, "worst": values[worst_signal],
                                         "worst_signal": worst_signal, "mean": float(np.mean(list(values.values()))),
                                         "n_signals": len(values), "images_per_s": speeds[name], "auroc": values}
    best = max(v["worst"] for v in table.values())
    tied = [k for k, v in table.items() if v["worst"] >= best - TIE_POINTS]
    winner = max(tied, key=lambda k: (table[k]["images_per_s"], table[k]["mean"], table[k]["recipe"] == "ours"))
    return {"winner": winner, "recipe": table[winner]["recipe"], "score": table[winner]["score"],
            "best_worst": best, "within_tie": sorted(tied, key=lambda k: -table[k]["worst"]),
            "tie_points": TIE_POINTS, "candidates": table}


def decision_markdown(decision: dict) -> str:
    rows = sorted(decision["candidates"].items(), key=lambda kv: -kv[1]["worst"])
    lines = ["| candidate | worst AUROC | worst signal | mean AUROC | images/s (fp32) | within 0.2 |",
             "|---|---|---|---|---|---|"]
    for k, v in rows:
        mark = "**winner**" if k == decision["winner"] else ("yes" if k in decision["within_tie"] else "")
        lines.append(f"| {k} | {v['worst']:.2f} | {v['worst_signal']} | {v['mean']:.2f} | {v['images_per_s']:.0f} | {mark} |")
    return (f"# Selection (docs/protocol.md): winner `{decision['winner']}`\n\n"
            f"Best worst case {decision['best_worst']:.2f}; {len(decision['within_tie'])} candidate(s) within "
            f"{decision['tie_points']} points; the fastest of them wins.\n\n" + "\n".join(lines) + "\n")


def select(out, *, settings=FOLD_SETTINGS, classes=FOLD_CLASSES, recipes=tuple(RECIPES), profile: str = PROFILE,
           seed: int = SEED, ckpt_dir=None, data_dir=None, rules_json="benchmarks/results/rules.json",
           log=print) -> dict | None:
    """Run every fold (resumable), then write ``decision.json`` / ``decision.md`` when all are there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for setting in settings:
        for c in classes:
            for recipe in recipes:
                records.append(run_fold(setting, recipe, c, out, profile=profile, seed=seed, ckpt_dir=ckpt_dir,
                                        data_dir=data_dir, log=log))
    full = (tuple(settings), tuple(classes), tuple(recipes), profile, seed) == (
        FOLD_SETTINGS, FOLD_CLASSES, tuple(RECIPES), PROFILE, SEED)
    decision = decide(records, score_speeds(rules_json))
    decision.update(protocol="docs/protocol.md", complete=full, speeds_from=str(rules_json),
                    folds=[fold_path(out, r["id"], r["recipe"], r["held_out_class"], profile, seed).name for r in records],
                    environment=environment())
    atomic_write_json(out / "decision.json", decision)
    atomic_write_bytes(out / "decision.md", decision_markdown(decision).encode())
    log(decision_markdown(decision))
    return decision


def add_parser(sub) -> None:
    p = sub.add_parser("select", help="run the selection protocol of docs/protocol.md (leave-one-class-out folds)")
    p.add_argument("--out", default="results/selection", help="folder of the folds' JSON and decision.json")
    p.add_argument("--settings", nargs="+", default=list(FOLD_SETTINGS), choices=list(FOLD_SETTINGS))
    p.add_argument("--classes", nargs="+", type=int, default=list(FOLD_CLASSES))
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--profile", default=PROFILE, choices=sorted(PROFILES),
                   help=f"training budget of every fold (the protocol's: {PROFILE})")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--ckpt-dir", default=None, help="per-fold training checkpoints, so a cut-off fold resumes")
    p.add_argument("--data-dir", default=None, help="folder searched first for datasets")
    p.add_argument("--rules-json", default="benchmarks/results/rules.json",
                   help="bench_rules.py result the tie-break's speeds come from")
    p.set_defaults(func=_main)


def _main(a) -> int:
    for c in a.classes:
        if not 0 <= c <= 9:
            raise ValueError(f"--classes: class indices are 0-9, got {c}")
    select(a.out, settings=a.settings, classes=a.classes, recipes=a.recipes, profile=a.profile, seed=a.seed,
           ckpt_dir=a.ckpt_dir, data_dir=a.data_dir, rules_json=a.rules_json)
    return 0
