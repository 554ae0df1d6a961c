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
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .config import LATENT_DIMS, PROFILES, Variant
from .data.strokes import strokes
from .detectors.fusion import (CLASS_GUARD_RULE, FISHER_LITE_STATS, GUARD_RULE, GUARD_LEVEL, class_max_scales,
                               class_ratio, fisher_score, guard_score, pixel_fisher_score, pixel_guard_score,
                               pixel_max_score)
from .detectors.image_stats import CLASS_STAT, STATS
from .generate.patch_shuffle import patch_shuffled
from .detectors.oodgen import SCORES, OODGen, class_pixel_distances
from .generate.health import health_line
from .metrics import ood_metrics
from .run import train_val_split
from .utils import atomic_write_bytes, atomic_write_json, environment, generator

# the recipes as rounds 1-5 trained them: the paper's linear last layer (the default since round 6 is cosine)
RECIPES: dict[str, dict] = {
    "ours": {"beta": "wide", "clip_type1": "half", "head": "linear"},
    "authors": {"encoder_act": "relu", "kl_warmup": 0.0, "sample_z": False, "nullspace": "rref",
                "beta": "authors", "type2_radius": "shell", "sphere_radius": "authors", "head": "linear"},
}
FOLD_SETTINGS = ("mnist", "fmnist")
FOLD_CLASSES = (0, 1, 2, 3, 4)
SIGNALS = ("held-out", "invert", "pixel-shuffle")
LITE_RULE = "reject+fisher-lite"
STATISTICS = ("feature-knn",) + STATS
# the protocol's order (feature-knn, now also a shipped rule, is listed once, among the statistics)
CANDIDATE_SCORES = tuple(r for r in SCORES if r not in STATISTICS + (GUARD_RULE, CLASS_GUARD_RULE)) + (LITE_RULE,) + STATISTICS
N_HELD_OUT = 2000
TIE_POINTS = 0.2
PROFILE = "quick"
SEED = 0
# Round 2 (docs/protocol.md, "Round 2"): the same folds and checkpoints, one more signal (procedural pen
# strokes), two more candidates (feature-knn with a pixel-KNN guard) and a leximin criterion.
STROKES = "strokes"
ROUND_SIGNALS = {1: SIGNALS, 2: SIGNALS + (STROKES,), 3: SIGNALS + (STROKES,)}
GUARD_RULES = {"feature-knn+pixel-guard@99.5": 0.995, GUARD_RULE: GUARD_LEVEL}   # the second is the shipped rule
# Round 3 (docs/protocol.md, "Round 3"): round 2's folds and signals, three more candidates
PIXEL_MAX_RULE = "feature-knn+pixel-knn@max"
PIXEL_FISHER_RULE = "feature-knn+pixel-knn@fisher"
ROUND3_RULES = (PIXEL_MAX_RULE, PIXEL_FISHER_RULE, CLASS_GUARD_RULE)
ROUND_SCORES = {1: CANDIDATE_SCORES, 2: CANDIDATE_SCORES + tuple(GUARD_RULES)}
ROUND_SCORES[3] = ROUND_SCORES[2] + ROUND3_RULES
# Round 4 (docs/protocol.md, "Round 4"): round 3's scores on a retrained n+1 classifier (a training-time
# candidate), round 1's CVAE of each fold reused; round 3's 20 fold records stand for the other candidates.
ROUND4_RECIPES: dict[str, tuple[str, dict]] = {"ours+patch-shuffle": ("ours", {"extra_outliers": "patch-shuffle"})}
ROUND_SIGNALS[4] = ROUND_SIGNALS[3]
ROUND_SCORES[4] = ROUND_SCORES[3]
# Round 5 (docs/protocol.md, "Round 5"): the class guard with one bar per class, two scales; round 1's 20 fold
# detectors rescored (every earlier score again, beside the two new ones), round 4's records read back.
CLASS_MAX_RULE = "feature-knn+class-pixel-guard@class-max"
BANK_MAX_RULE = "feature-knn+class-pixel-guard@bank-max"
ROUND5_RULES = (CLASS_MAX_RULE, BANK_MAX_RULE)
ROUND_SIGNALS[5] = ROUND_SIGNALS[3]
ROUND_SCORES[5] = ROUND_SCORES[4] + ROUND5_RULES
# Round 6 (docs/protocol.md, "Round 6"): round 3's scores on the n+1 classifier of the 'ours' folds retrained with a
# cosine head (a candidate), and again with another n+1 seed (the retraining-noise control, not a candidate);
# round 1's CVAE of each fold reused, round 5's and round 4's records read back.
ROUND6_RECIPES: dict[str, tuple[str, dict]] = {"ours+cosine": ("ours", {"head": "cosine"})}
CONTROL_RECIPE = "ours@nplus1-seed1"
CONTROL_NPLUS1_SEED = 1
# every recipe trained again on round 1's CVAE of its base recipe's fold: base recipe, Variant change, n+1 seed
RETRAINED: dict[str, tuple[str, dict, int | None]] = {
    **{k: (b, c, None) for k, (b, c) in ROUND4_RECIPES.items()},
    **{k: (b, c, None) for k, (b, c) in ROUND6_RECIPES.items()},
    CONTROL_RECIPE: ("ours", {}, CONTROL_NPLUS1_SEED)}
ROUND_SIGNALS[6] = ROUND_SIGNALS[3]
ROUND_SCORES[6] = ROUND_SCORES[5]
ROUNDS = (1, 2, 3, 4, 5, 6)
# The stages each candidate needs, for the speed of one that benchmarks/bench_rules.py does not time.
LITE_STAGES = ("classifier pass (features + logits)", "feature KNN search", "pixel KNN search", "fusion arithmetic")


def shifted(x: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """The ``invert`` (1 - x) or ``pixel-shuffle`` (each image's pixels permuted by its own seeded
    permutation, channels kept together) version of images ``x`` (N, C, H, W)."""
    if kind == "invert":
        return 1.0 - x
    if kind == "pixel-shuffle":         # 1 x 1 tiles: the same draws and order as a per-pixel gather
        return patch_shuffled(x, generator(seed, "pixel-shuffle"), grid=tuple(x.shape[-2:]))
    raise ValueError(f"unknown shift {kind!r}; use invert or pixel-shuffle")


def fold_path(out: Path, setting: str, recipe: str, c: int, profile: str = PROFILE, seed: int = SEED,
              round_: int = 1) -> Path:
    """Round 1's fold records lie in ``out``, round r's (r > 1) in ``out/round<r>`` (same names)."""
    folder = Path(out) if round_ == 1 else Path(out) / f"round{round_}"
    return folder / f"{setting}-{profile}-{recipe}-class{c}-seed{seed}.json"


def strokes_seed(setting: str, c: int, seed: int) -> int:
    """The seed of a fold's stroke images (a different set in each fold)."""
    return int(np.random.default_rng([seed, FOLD_SETTINGS.index(setting), c, 7]).integers(2 ** 31))


def class_bar_context(det: OODGen, x_calib: torch.Tensor) -> dict[str, tuple[dict, np.ndarray, float]]:
    """Round 5's per-class bars from a calibrated detector and its calibration images: per candidate, (the
    per-class scales, the calibration images' sorted ratios, the scale of a class without one)."""
    logits = det.logits(x_calib)
    labels = logits[:, :-1].argmax(1).numpy()
    d = class_pixel_distances(det.class_pixel_bank_, x_calib, logits)[CLASS_STAT]
    fallback = float(d.max())
    scales = {CLASS_MAX_RULE: class_max_scales(d, labels), BANK_MAX_RULE: det.class_pixel_bank_.loo_max()}
    return {rule: (sc, np.sort(class_ratio(d, labels, sc, fallback)), fallback) for rule, sc in scales.items()}


def candidate_scores(det: OODGen, x: torch.Tensor, round_: int = 1,
                     bars: dict[str, tuple[dict, np.ndarray, float]] | None = None) -> dict[str, np.ndarray]:
    """Every candidate score of a round for images ``x`` under a fitted and calibrated detector (round 3's
    class guard is the shipped rule: the detector calibrates its class pixel banks from the fold's labels;
    round 5's per-class bars come from :func:`class_bar_context`)."""
    s = det.score_all(x, SCORES, components=True)
    s[LITE_RULE] = fisher_score(det.fusion_, s["feature-knn"], s["ood-class"], s, FISHER_LITE_STATS)
    if round_ >= 2:
        for name, level in GUARD_RULES.items():
            if name not in s:           # the shipped guard is one of SCORES already
                s[name] = pixel_guard_score(det.fusion_, s["feature-knn"], s["pixel-knn"], level)
    if round_ >= 3:
        s[PIXEL_MAX_RULE] = pixel_max_score(det.fusion_, s["feature-knn"], s["pixel-knn"])
        s[PIXEL_FISHER_RULE] = pixel_fisher_score(det.fusion_, s["feature-knn"], s["pixel-knn"])
    if round_ >= 5:
        if bars is None:
            raise ValueError("round 5's candidates need the per-class bars: class_bar_context(det, x_calib)")
        # the class distances are score_all's (the shipped class guard's); only the predicted classes are new
        labels = det.predict_class(x)
        for rule, (scales, calib_sorted, fallback) in bars.items():
            s[rule] = guard_score(s["feature-knn"], class_ratio(s[CLASS_STAT], labels, scales, fallback),
                                  calib_sorted, GUARD_LEVEL)
    return s


def recipe_variant(recipe: str) -> Variant:
    """The Variant a recipe trains: one of :data:`RECIPES`, or a retrained recipe (a base recipe with a
    training change, :data:`RETRAINED`: rounds 4 and 6)."""
    if recipe in RECIPES:
        return Variant(**RECIPES[recipe])
    if recipe in RETRAINED:
        base, change, _ = RETRAINED[recipe]
        return Variant(**{**RECIPES[base], **change})
    raise ValueError(f"unknown recipe {recipe!r}; use one of {tuple(RECIPES) + tuple(RETRAINED)}")


def reuse_cvae(ckpt_dir, out, setting: str, recipe: str, c: int, profile: str, seed: int, dest: Path) -> str:
    """Copy the CVAE checkpoints of a retrained recipe's base fold (round 1's, in ``ckpt_dir``) to ``dest``,
    unless ``dest`` has a CVAE already, so that only the n+1 classifier is trained again.  Returns the
    source folder's name."""
    import shutil
    src = Path(ckpt_dir) / fold_path(out, setting, RETRAINED[recipe][0], c, profile, seed).stem
    if not (src / "cvae.pt").is_file():
        raise FileNotFoundError(f"a retrained recipe reuses round 1's CVAE of the fold, but {src / 'cvae.pt'} is missing: "
                                "pass --ckpt-dir with round 1's fold checkpoints")
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "cvae.pt").is_file():
        for f in sorted(src.glob("cvae*.pt")):
            shutil.copy2(f, dest / f.name)
    return src.name


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
             ckpt_dir=None, data_dir=None, round_: int = 1, log=print) -> dict:
    """Train one recipe without class ``c`` of ``setting`` and write every candidate's metrics on every
    signal of round ``round_`` to :func:`fold_path` (a finished fold is read back, not run again).  The
    training checkpoints are round 1's (``ckpt_dir``): rounds 2 and 3 rescore the same detectors."""
    path = fold_path(out, setting, recipe, c, profile, seed, round_)
    if path.exists():
        return json.loads(path.read_text())
    from .report import class_picks, type2_grid
    variant = recipe_variant(recipe)
    fold_ckpt = Path(ckpt_dir) / path.stem if ckpt_dir is not None else None
    cvae_from = None
    nplus1_seed = None
    if recipe in RETRAINED:
        if fold_ckpt is None:
            raise ValueError(f"round {round_} retrains the n+1 classifier on round 1's CVAE of each fold: pass --ckpt-dir")
        cvae_from = reuse_cvae(ckpt_dir, out, setting, recipe, c, profile, seed, fold_ckpt)
        nplus1_seed = RETRAINED[recipe][2]
    # a retrained recipe is scored with round 3's candidates (rounds 4 and 6)
    scores_round = 3 if recipe in RETRAINED and round_ >= 4 else round_
    xtr, ytr, x_calib, x_in, y_in, x_out = fold_data(setting, c, profile, seed, data_dir)
    trained_before = fold_ckpt is not None and (fold_ckpt / "nplus1.pt").is_file()
    resumed = fold_ckpt is not None and fold_ckpt.is_dir() and any(fold_ckpt.iterdir())
    t0 = time.perf_counter()
    det = OODGen(latent_dim=LATENT_DIMS[setting], profile=profile, variant=variant, score="ood-class", seed=seed,
                 checkpoint_dir=None if fold_ckpt is None else str(fold_ckpt), nplus1_seed=nplus1_seed).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    picks = class_picks(ytr)
    if round_ == 1:         # later rounds rescore round 1's detectors: its pictures hold
        type2_grid(det.cvae_, det.ellipsoids_, xtr[picks], ytr[picks], path.with_name(path.stem + "-type2.png"),
                   radius=variant.type2_radius, generator=generator(seed, "selection", c),
                   title=f"{setting} without class {c}, {recipe}: Type II ({variant.type2_radius})")
    det.calibrate(x_calib, x_train=xtr, y_train=ytr)
    t1 = time.perf_counter()
    bars = class_bar_context(det, x_calib) if scores_round >= 5 else None
    s_in = candidate_scores(det, x_in, scores_round, bars)
    signals = {"held-out": x_out, "invert": shifted(x_in, "invert", seed),
               "pixel-shuffle": shifted(x_in, "pixel-shuffle", seed)}
    if STROKES in ROUND_SIGNALS[round_]:
        signals[STROKES] = strokes(N_HELD_OUT, size=x_in.shape[-1], seed=strokes_seed(setting, c, seed)).expand(
            -1, x_in.shape[1], -1, -1).contiguous()
    metrics: dict[str, dict] = {name: {} for name in ROUND_SCORES[scores_round]}
    for sig, images in signals.items():
        s_out = candidate_scores(det, images, scores_round, bars)
        for name in ROUND_SCORES[scores_round]:
            metrics[name][sig] = ood_metrics(s_in[name], s_out[name])
    accuracy = float((det.predict_class(x_in) == y_in.numpy()).mean() * 100)
    rec = {"id": setting, "profile": profile, "round": round_, "recipe": recipe,
           **({"scores_round": scores_round} if scores_round != round_ else {}),
           **({"nplus1_seed": nplus1_seed} if nplus1_seed is not None else {}),
           "variant": {k: v for k, v in asdict(variant).items() if v != getattr(Variant(), k)},
           **({"cvae_from": cvae_from} if cvae_from else {}),
           "variant_full": asdict(variant), "held_out_class": c, "seed": seed,
           "n_train": len(xtr), "n_calibration": len(x_calib), "n_in": len(x_in), "n_held_out": len(x_out),
           "accuracy_in": accuracy, "metrics": metrics,
           "cvae_health": {k: det.cvae_health_.get(k) for k in ("active_dims", "latent_dim", "recon_ratio",
                                                              "spread_ratio", "collapsed")},
           "health_line": health_line(det.cvae_health_), "training_s": round(seconds, 1),
           "scoring_s": round(time.perf_counter() - t1, 1), "resumed": resumed,
           "rescored_checkpoint": trained_before,
           "command": " ".join(sys.argv), "environment": environment(),
           "note": "docs/protocol.md: training split only (the held-out class's training images and the other "
                   "classes' validation images, inverted and pixel-shuffled" + ("; procedural pen strokes"
                   if round_ >= 2 else "") + "); no test split, no test OOD set"}
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
    # the lite rule's stages (classifier pass, both KNN searches): the guards' and fusions' too
    for name in tuple(GUARD_RULES) + ROUND3_RULES + ROUND5_RULES:
        out.setdefault(name, out[LITE_RULE])
    missing = [s for s in ROUND_SCORES[max(ROUNDS)] if s not in out]
    if missing:
        raise ValueError(f"{rules_json}: no speed for {missing}")
    return out


def candidate_table(records: list[dict], speeds: dict[str, float], round_: int = 1) -> dict[str, dict]:
    """Per candidate of round ``round_``: its AUROC on every signal of every fold, worst case and mean."""
    table: dict[str, dict] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in records):
        mine = [r for r in records if r["recipe"] == recipe]
        # round 5 reads round 4's records back: they hold round 4's scores, not round 5's new ones, and round 6's
        # retrained recipes hold round 3's (``scores_round``; a record without a round, such as round 1's, is
        # taken to be of the round asked for)
        have = ROUND_SCORES[min(round_, min(r.get("scores_round", r.get("round", round_)) for r in mine))]
        for name in (n for n in ROUND_SCORES[round_] if n in have):
            values = {k: v for r in mine for k, v in _signal_aurocs(r, name, ROUND_SIGNALS[round_]).items()}
            worst_signal = min(values, key=values.get)
            table[f"{recipe}/{name}"] = {"recipe": recipe, "score": name, "worst": values[worst_signal],
                                         "worst_signal": worst_signal, "mean": float(np.mean(list(values.values()))),
                                         "n_signals": len(values), "images_per_s": speeds[name], "auroc": values}
    return table


def _fastest(table: dict, keys) -> str:
    return max(keys, key=lambda k: (table[k]["images_per_s"], table[k]["mean"], table[k]["recipe"] == "ours"))


def decide(records: list[dict], speeds: dict[str, float], round_: int = 1) -> dict:
    """Round 1's decision from every fold's record: worst AUROC over the signals per candidate, the
    best worst case, the candidates within :data:`TIE_POINTS` of it, and the fastest of those (then the
    higher mean, then the recipe ``ours``)."""
    table = candidate_table(records, speeds, round_)
    best = max(v["worst"] for v in table.values())
    tied = [k for k, v in table.items() if v["worst"] >= best - TIE_POINTS]
    winner = _fastest(table, tied)
    return {"criterion": "worst case, then the fastest within the tie", "winner": winner,
            "recipe": table[winner]["recipe"], "score": table[winner]["score"],
            "best_worst": best, "within_tie": sorted(tied, key=lambda k: -table[k]["worst"]),
            "tie_points": TIE_POINTS, "candidates": table}


def decide_leximin(records: list[dict], speeds: dict[str, float], round_: int = 2) -> dict:
    """Rounds 2 and 3's decision: leximin with a tolerance.  Each candidate's AUROCs over every signal of every fold
    are sorted from the worst up; at rank 1 (the worst case, round 1's criterion) the candidates within
    :data:`TIE_POINTS` of the best stay, and while more than one stays, rank 2 (the second worst) sifts
    them the same way, then rank 3, and so on.  Those left after the last rank: the fastest (then the
    higher mean, then the recipe ``ours``).  ``steps`` records who stayed at each rank that removed anyone."""
    table = candidate_table(records, speeds, round_)
    ranked = {k: sorted(v["auroc"].values()) for k, v in table.items()}
    alive = list(table)
    steps = []
    for i in range(min(len(v) for v in ranked.values())):
        if len(alive) == 1:
            break
        best = max(ranked[k][i] for k in alive)
        keep = [k for k in alive if ranked[k][i] >= best - TIE_POINTS]
        if len(keep) < len(alive):
            steps.append({"rank": i + 1, "best": best, "kept": keep,
                          "removed": {k: ranked[k][i] for k in alive if k not in keep}})
        alive = keep
    winner = _fastest(table, alive)
    best_worst = max(v["worst"] for v in table.values())
    return {"criterion": "leximin within 0.2 points, then the fastest", "winner": winner,
            "recipe": table[winner]["recipe"], "score": table[winner]["score"], "best_worst": best_worst,
            "within_tie": sorted(alive, key=lambda k: -table[k]["worst"]), "tie_points": TIE_POINTS,
            "steps": steps, "round1_criterion": decide(records, speeds, round_)["winner"], "candidates": table,
            **({"round2_candidates_winner": decide_leximin(records, speeds, 2)["winner"]} if round_ == 3 else {}),
            **({"round3_candidates_winner": decide_leximin([r for r in records if r["recipe"] in RECIPES], speeds, 3)[
                "winner"]} if round_ >= 4 else {}),
            **({"round4_candidates_winner": decide_leximin(
                [r for r in records if r["recipe"] not in ROUND6_RECIPES], speeds, 4)["winner"]} if round_ >= 5 else {}),
            **({"round5_candidates_winner": decide_leximin(
                [r for r in records if r["recipe"] not in ROUND6_RECIPES], speeds, 5)["winner"]} if round_ >= 6 else {})}


def _signal_aurocs(rec: dict, rule: str, signals=ROUND_SIGNALS[3]) -> dict[str, float]:
    """A fold record's AUROCs of ``rule``, keyed ``setting/class<c>/<signal>`` (the candidate table's keys)."""
    return {f"{rec['id']}/class{rec['held_out_class']}/{sig}": rec["metrics"][rule][sig]["auroc"] for sig in signals}


def noise_table(records: list[dict], controls: list[dict], rule: str = CLASS_GUARD_RULE) -> dict[str, dict]:
    """Round 6's retraining noise of ``rule`` per fold and signal: its
    AUROC on the fold's ``ours`` detector, on the control (the same recipe, CVAE, split and banks, the n+1 classifier
    trained with another seed), their absolute difference, and each retrained recipe's change from ``ours``."""
    by_recipe: dict[str, dict[str, float]] = {}
    for r in records:
        if r["recipe"] == "ours" or r["recipe"] in RETRAINED:
            by_recipe.setdefault(r["recipe"], {}).update(_signal_aurocs(r, rule))
    base = by_recipe.pop("ours", {})
    other = by_recipe
    rows = {}
    for c in controls:
        for key, v in _signal_aurocs(c, rule).items():
            if key in base:
                rows[key] = {"ours": base[key], "control": v, "noise": abs(v - base[key]),
                             **{f"{name} change": d[key] - base[key] for name, d in other.items() if key in d}}
    return rows


def decide_round6(records: list[dict], controls: list[dict], speeds: dict[str, float]) -> dict:
    """Round 6's decision: round 5's leximin over every candidate, then the noise rule of docs/protocol.md: a
    winner of a round-6 recipe stands only if, at the leximin rank where the last candidate of another recipe was
    removed, its AUROC exceeds that candidate's by more than the control's retraining noise of the shipped rule
    on the winner's fold and signal of that rank; otherwise the best candidate of the other recipes wins."""
    d = decide_leximin(records, speeds, 6)
    noise = noise_table(records, controls, CLASS_GUARD_RULE)
    d["noise_rule"] = CLASS_GUARD_RULE
    d["noise"] = noise
    d["accuracy_in"] = {f"{r['recipe']}/{r['id']}/class{r['held_out_class']}": r["accuracy_in"]
                        for r in records + controls if r["recipe"] == "ours" or r["recipe"] in RETRAINED}
    if d["recipe"] not in ROUND6_RECIPES:
        d["noise_check"] = {"applies": False, "why": "the leximin winner is not of a round-6 recipe"}
        return d
    table, w = d["candidates"], d["winner"]
    order = {k: sorted(v["auroc"].items(), key=lambda kv: kv[1]) for k, v in table.items()}
    step = next((st for st in reversed(d["steps"]) if any(table[k]["recipe"] not in ROUND6_RECIPES
                                                          for k in st["removed"])), None)
    fallback = d["round5_candidates_winner"]
    if step is None:
        check = {"applies": True, "passed": False, "why": "a candidate of another recipe stayed to the end: "
                 "the win is the tie-break's, not a margin"}
    else:
        i = step["rank"] - 1
        other = max((k for k in step["removed"] if table[k]["recipe"] not in ROUND6_RECIPES),
                    key=lambda k: step["removed"][k])
        signal, value = order[w][i]
        margin = value - step["removed"][other]
        if signal not in noise:
            raise ValueError(f"round 6: no control record for {signal}; run the control's folds first")
        check = {"applies": True, "rank": i + 1, "signal": signal, "winner_auroc": value, "other": other,
                 "other_auroc": step["removed"][other], "margin": margin, "noise": noise[signal]["noise"],
                 "passed": margin > noise[signal]["noise"]}
    d["noise_check"] = check
    if not check["passed"]:
        d["leximin_winner"] = w
        d["winner"] = fallback
        d["recipe"], d["score"] = table[fallback]["recipe"], table[fallback]["score"]
        d["within_tie"] = [fallback]
        d["criterion"] += "; a round-6 winner only beyond the retraining noise (it was not)"
    return d


def decision_markdown(decision: dict) -> str:
    rows = sorted(decision["candidates"].items(), key=lambda kv: -kv[1]["worst"])
    lines = ["| candidate | worst AUROC | worst signal | mean AUROC | images/s (fp32) | within 0.2 |",
             "|---|---|---|---|---|---|"]
    for k, v in rows:
        mark = "**winner**" if k == decision["winner"] else ("yes" if k in decision["within_tie"] else "")
        lines.append(f"| {k} | {v['worst']:.2f} | {v['worst_signal']} | {v['mean']:.2f} | {v['images_per_s']:.0f} | {mark} |")
    if "steps" not in decision:
        return (f"# Selection (docs/protocol.md): winner `{decision['winner']}`\n\n"
                f"Best worst case {decision['best_worst']:.2f}; {len(decision['within_tie'])} candidate(s) within "
                f"{decision['tie_points']} points; the fastest of them wins.\n\n" + "\n".join(lines) + "\n")
    steps = [f"* rank {s['rank']} (best {s['best']:.2f}): removed "
             + ", ".join(f"{k} ({v:.2f})" for k, v in sorted(s["removed"].items(), key=lambda kv: -kv[1]))
             for s in decision["steps"]]
    lines[0] = lines[0].replace("within 0.2", "left after leximin")
    also = "".join(f"; round {k[5]}'s candidates alone give `{decision[k]}`"
                   for k in ("round2_candidates_winner", "round3_candidates_winner", "round4_candidates_winner",
                             "round5_candidates_winner") if k in decision)
    return (f"# Selection round {decision.get('round', 2)} (docs/protocol.md): winner `{decision['winner']}`\n\n"
            f"Criterion: {decision['criterion']} (round 1's criterion on the same numbers would pick "
            f"`{decision['round1_criterion']}`{also}). Best worst case {decision['best_worst']:.2f}.\n\n"
            + _noise_markdown(decision) +
            "Leximin, rank by rank (rank 1 = each candidate's worst AUROC, rank 2 its second worst, ...):\n\n"
            + "\n".join(steps or ["* no rank removed anyone"]) + "\n\n" + "\n".join(lines) + "\n")


def _noise_markdown(decision: dict) -> str:
    """Round 6's noise check and retraining-noise table (empty for other rounds)."""
    if "noise" not in decision:
        return ""
    c = decision["noise_check"]
    if not c["applies"]:
        head = f"Noise rule: does not apply ({c['why']})."
    elif "margin" in c:
        head = (f"Noise rule: the leximin winner `{decision.get('leximin_winner', decision['winner'])}` separated "
                f"from `{c['other']}` at rank {c['rank']} on {c['signal']}: {c['winner_auroc']:.2f} against "
                f"{c['other_auroc']:.2f}, a margin of {c['margin']:.2f} against the control's retraining noise "
                f"{c['noise']:.2f} there: " + ("it stands." if c["passed"] else "within the noise, so it does not."))
    else:
        head = f"Noise rule: {c['why']}; the round-5 candidates' winner stands."
    rows = decision["noise"]
    changes = sorted({k for v in rows.values() for k in v if k.endswith(" change")})
    lines = ["| fold / signal | ours | control (n+1 seed 1) | noise | " + " | ".join(changes) + " |",
             "|---|---|---|---|" + "---|" * len(changes)]
    for key, v in rows.items():
        lines.append(f"| {key} | {v['ours']:.2f} | {v['control']:.2f} | {v['noise']:.2f} | "
                     + " | ".join(f"{v[k]:+.2f}" if k in v else "" for k in changes) + " |")
    held = [v["noise"] for k, v in rows.items() if k.endswith("/held-out")]
    summary = (f"Retraining noise of `{decision['noise_rule']}` (|control - ours|): median "
               f"{float(np.median([v['noise'] for v in rows.values()])):.2f}, largest "
               f"{max(v['noise'] for v in rows.values()):.2f}" + (f"; held-out classes: median {float(np.median(held)):.2f}, "
                                                                  f"largest {max(held):.2f}" if held else "") + ".")
    return head + "\n\n" + summary + "\n\n" + "\n".join(lines) + "\n\n"


def select(out, *, settings=FOLD_SETTINGS, classes=FOLD_CLASSES, recipes=tuple(RECIPES), profile: str = PROFILE,
           seed: int = SEED, ckpt_dir=None, data_dir=None, rules_json="benchmarks/results/rules.json",
           round_: int = 1, retrained=None, log=print) -> dict | None:
    """Run every fold of round ``round_`` (resumable), then write its ``decision.json`` / ``decision.md``
    (round 1 in ``out``, round r > 1 in ``out/round<r>``).  Round 6: ``retrained`` names which of its retrained
    recipes (:data:`ROUND6_RECIPES` and :data:`CONTROL_RECIPE`) this call trains (default all; two calls may
    train different ones side by side); the decision is written once every one's records are in."""
    if round_ not in ROUNDS:
        raise ValueError(f"selection round must be one of {ROUNDS}, got {round_!r}")
    if round_ >= 4 and ckpt_dir is None:    # checked before any folder is made
        raise ValueError(f"round {round_} " + ("rescores round 1's fold detectors" if round_ == 5 else
                         "retrains the n+1 classifier on round 1's CVAE of each fold") + ": pass --ckpt-dir")
    round6 = tuple(ROUND6_RECIPES) + (CONTROL_RECIPE,)
    retrained = round6 if retrained is None else tuple(retrained)
    if round_ != 6 and retrained != round6:
        raise ValueError("--retrained chooses among round 6's retrained recipes: use it with --round 6")
    unknown = [r for r in retrained if r not in round6]
    if unknown:
        raise ValueError(f"--retrained: unknown recipe(s) {unknown}; round 6 retrains {round6}")
    out = Path(out)
    folder = fold_path(out, "mnist", "ours", 0, profile, seed, round_).parent
    folder.mkdir(parents=True, exist_ok=True)
    records, controls, deferred = [], [], []
    # round 4: round 3's records of these recipes; round 6: round 5's (read back, not rescored)
    base_round = min(round_, 3) if round_ < 5 else 5
    for setting in settings:
        for c in classes:
            for recipe in recipes:
                records.append(run_fold(setting, recipe, c, out, profile=profile, seed=seed, ckpt_dir=ckpt_dir,
                                        data_dir=data_dir, round_=base_round, log=log))
            if round_ >= 4:             # rounds 5 and 6: round 4's records of the retrained recipes (read back)
                for recipe in ROUND4_RECIPES:
                    records.append(run_fold(setting, recipe, c, out, profile=profile, seed=seed, ckpt_dir=ckpt_dir,
                                            data_dir=data_dir, round_=4, log=log))
            if round_ >= 6:
                for recipe in round6:
                    if recipe not in retrained:        # another call's: read back once this call has trained its own
                        deferred.append((setting, recipe, c))
                        continue
                    rec = run_fold(setting, recipe, c, out, profile=profile, seed=seed, ckpt_dir=ckpt_dir,
                                   data_dir=data_dir, round_=6, log=log)
                    (controls if recipe == CONTROL_RECIPE else records).append(rec)
    waiting = [fold_path(out, s_, r, c, profile, seed, 6).name for s_, r, c in deferred
               if not fold_path(out, s_, r, c, profile, seed, 6).exists()]
    for setting, recipe, c in ([] if waiting else deferred):
        rec = run_fold(setting, recipe, c, out, profile=profile, seed=seed, ckpt_dir=ckpt_dir, data_dir=data_dir,
                       round_=6, log=log)
        (controls if recipe == CONTROL_RECIPE else records).append(rec)
    if waiting:
        log(f"round {round_}: no decision yet; waiting for {len(waiting)} fold(s) of another call: {', '.join(waiting)}")
        return None
    full = (tuple(settings), tuple(classes), tuple(recipes), profile, seed) == (
        FOLD_SETTINGS, FOLD_CLASSES, tuple(RECIPES), PROFILE, SEED)
    if round_ == 6:
        decision = decide_round6(records, controls, score_speeds(rules_json))
    else:
        decision = (decide if round_ == 1 else decide_leximin)(records, score_speeds(rules_json), round_)
    decision.update(protocol="docs/protocol.md", round=round_, complete=full, speeds_from=str(rules_json),
                    folds=[os.path.relpath(fold_path(out, r["id"], r["recipe"], r["held_out_class"], profile, seed,
                                                     r.get("round", 1)), folder) for r in records + controls],
                    environment=environment())
    atomic_write_json(folder / "decision.json", decision)
    atomic_write_bytes(folder / "decision.md", decision_markdown(decision).encode())
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
    p.add_argument("--round", type=int, default=1, choices=list(ROUNDS),
                   help="1: the first protocol; 2: its second round (strokes signal, pixel-guard candidates, "
                        "leximin), rescoring round 1's fold checkpoints (--ckpt-dir) into OUT/round2; 3: its "
                        "third (fusions of the feature and pixel KNN distances, a class-conditional pixel guard) "
                        "into OUT/round3; 4: its fourth (the n+1 classifier of the 'ours' folds retrained with "
                        "--extra-outliers patch-shuffle on round 1's CVAEs, beside round 3's records) into OUT/round4; 5: its "
                        "fifth (the class guard with one bar per class, two scales; round 1's detectors "
                        "rescored, beside round 4's records) into OUT/round5; 6: its sixth (the n+1 classifier of "
                        "the 'ours' folds retrained with a cosine head, and with another seed as the retraining-noise "
                        "control, on round 1's CVAEs) into OUT/round6")
    p.add_argument("--retrained", nargs="+", default=None, choices=list(ROUND6_RECIPES) + [CONTROL_RECIPE],
                   help="round 6: which retrained recipes this call trains (default all); another call may train "
                        "the others side by side, and the decision is written once all are in")
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
           ckpt_dir=a.ckpt_dir, data_dir=a.data_dir, rules_json=a.rules_json, round_=a.round, retrained=a.retrained)
    return 0
