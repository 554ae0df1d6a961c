"""``oodgen demo``: the paper's appendix-A experiment on the 3-D sphere toy, end to end.

Per seed: a :class:`~oodgen.toy.generator.VectorCVAE` learns the two classes on the unit
sphere (:mod:`oodgen.toy.sphere`); Type I (off-manifold) and Type II (on-manifold) outliers
from it train an n+1 MLP classifier (2 classes + OOD, score p(OOD), higher = more OOD); for
comparison a GAN and a confident classifier are trained jointly (:mod:`oodgen.toy.gan`, score
1 - max softmax).  Reported per seed and as mean +- std over seeds: the n+1 classifier's
accuracy, AUROC on the toy's OOD test sets (:func:`oodgen.metrics.ood_metrics`), and boundary
coverage of both generators' samples (:mod:`oodgen.toy.coverage`, the same number of samples
for both).  Figures (first seed): Fig. 5a/5b/5c (Type I, Type II in 3-D, Type II in 2-D),
Fig. 4 (GAN samples, 3-D and 2-D) and Fig. 1b-style decision regions on and around the sphere.

Writes ``OUT/summary.json``, ``OUT/summary.md`` and ``OUT/*.png``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..detectors.oodgen import nplus1_scores
from ..metrics import ood_metrics, threshold_at_tpr
from ..utils import atomic_write_bytes, atomic_write_json, environment, generator
from . import sphere as S
from .budget import BUDGETS, Budget  # noqa: F401 (re-exported)
from .coverage import boundary_coverage
from .figures import _tensor, write_figures
from .gan import ConfidentGAN, mlp
from .generator import TOY_BETA, VectorCVAE, fit_class_ellipsoids, train_vector_cvae, type1_samples, type2_samples


HIDDEN = 64
BATCH = 128                    # in-distribution points per classifier step (+ BATCH/2 of each outlier type)


def train_nplus1_mlp(cvae: VectorCVAE, ellipsoids, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                     gen: torch.Generator) -> nn.Module:
    """MLP with n+1 outputs; each step: BATCH in-distribution points + BATCH/2 Type I + BATCH/2 Type II
    outliers (label n), plain cross-entropy; outlier pools regenerated every ``regen_every`` steps."""
    n_classes = int(y.max()) + 1
    model = mlp(x.shape[1], n_classes + 1, HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, budget.classifier_steps))
    k = BATCH // 2
    for step in range(budget.classifier_steps):
        if step % budget.regen_every == 0:
            src = torch.randint(0, len(x), (budget.pool_size,), generator=gen)
            pool1 = type1_samples(cvae, x[src], y[src], generator=gen)
            pool2 = type2_samples(cvae, ellipsoids, y[torch.randint(0, len(y), (budget.pool_size,), generator=gen)],
                                  generator=gen)
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        i1 = torch.randint(0, len(pool1), (k,), generator=gen)
        i2 = torch.randint(0, len(pool2), (k,), generator=gen)
        xb = torch.cat([x[idx], pool1[i1], pool2[i2]])
        yb = torch.cat([y[idx], torch.full((2 * k,), n_classes, dtype=y.dtype)])
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


def run_seed(seed: int, budget: Budget) -> tuple[dict, dict]:
    """Train and evaluate one seed; returns (numbers for the summary, arrays and models for figures)."""
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    gen = generator(seed, "toy-demo")
    train = S.in_distribution(budget.n_train, seed, "train")
    val = S.in_distribution(budget.n_val, seed, "val")
    test = S.in_distribution(budget.n_test, seed, "test")
    oods = {name: S.ood_points(name, budget.n_test, seed) for name in S.OOD_SETS}
    x, y = _tensor(train.points), _tensor(train.labels)
    xt = _tensor(test.points)
    timings = {}

    t0 = time.perf_counter()
    cvae = VectorCVAE(n_classes=2, dim=3, latent_dim=2, hidden=HIDDEN)
    train_vector_cvae(cvae, x, y, budget.cvae_steps, generator=gen)
    ellipsoids = fit_class_ellipsoids(cvae, x, y)
    timings["cvae"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    classifier = train_nplus1_mlp(cvae, ellipsoids, x, y, budget, gen)
    timings["nplus1_classifier"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(seed + 1)
    gan = ConfidentGAN(n_classes=2, dim=3, hidden=HIDDEN, steps=budget.gan_steps).fit(x, y, generator=gen)
    timings["gan"] = time.perf_counter() - t0

    # Evaluation: the same number of generated samples for both methods (half Type I, half Type II).
    half = budget.n_coverage // 2
    src = torch.randint(0, len(x), (half,), generator=gen)
    type1 = type1_samples(cvae, x[src], y[src], generator=gen)
    type2 = type2_samples(cvae, ellipsoids, y[torch.randint(0, len(y), (budget.n_coverage - half,), generator=gen)],
                          generator=gen)
    gan_samples = gan.sample(budget.n_coverage, generator=gen)
    with torch.no_grad():
        logits_test = classifier(xt)
        logits_ood = {k: classifier(_tensor(v.points)) for k, v in oods.items()}
    s_in = nplus1_scores(logits_test, "ood-class")
    g_in = gan.score(xt)
    metrics = {"ours": {k: ood_metrics(s_in, nplus1_scores(lo, "ood-class")) for k, lo in logits_ood.items()},
               "gan": {k: ood_metrics(g_in, gan.score(_tensor(v.points))) for k, v in oods.items()}}
    yt = _tensor(test.labels)
    gan_threshold = threshold_at_tpr(gan.score(_tensor(val.points)), 0.95)
    numbers = {
        "seed": seed,
        "accuracy": {"ours": 100.0 * float((logits_test[:, :2].argmax(1) == yt).double().mean()),
                     "gan": 100.0 * float((gan.logits(xt).argmax(1) == yt).double().mean())},
        "auroc": {m: {k: v["auroc"] for k, v in d.items()} for m, d in metrics.items()},
        # Fraction called OOD: by the n+1 argmax for ours, by the 95 %-TPR threshold for the GAN's classifier.
        "called_ood": {
            "ours": {"test_in": float((logits_test.argmax(1) == 2).double().mean()),
                     **{k: float((lo.argmax(1) == 2).double().mean()) for k, lo in logits_ood.items()}},
            "gan": {"test_in": float((g_in > gan_threshold).mean()),
                    **{k: float((gan.score(_tensor(v.points)) > gan_threshold).mean()) for k, v in oods.items()}}},
        "coverage": {"ours": boundary_coverage(torch.cat([type1, type2]).numpy()),
                     "ours_type1": boundary_coverage(type1.numpy()),
                     "ours_type2": boundary_coverage(type2.numpy()),
                     "gan": boundary_coverage(gan_samples.numpy())},
        "metrics": metrics,
        "timings_s": {**timings, "total": time.perf_counter() - t_start},
    }
    artefacts = {"train": train, "type1": type1.numpy(), "type2": type2.numpy(), "gan": gan_samples.numpy(),
                 "classifier": classifier, "gan_model": gan, "gan_threshold": gan_threshold}
    return numbers, artefacts


# --------------------------------------------------------------------------------------------- figures

def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed":
            out[key] = float(v)
    return out


def aggregate(per_seed: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation (ddof 1; 0 for one seed) of every number over seeds."""
    flats = [_flatten({k: v for k, v in s.items() if k != "timings_s"}) for s in per_seed]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    ddof = 1 if len(flats) > 1 else 0
    mean = {k: float(np.mean([f[k] for f in flats])) for k in keys}
    std = {k: float(np.std([f[k] for f in flats], ddof=ddof)) for k in keys}
    return mean, std


def markdown_summary(summary: dict) -> str:
    mean, std = summary["mean"], summary["std"]

    def pm(key: str, fmt: str = ".1f") -> str:
        return f"{mean[key]:{fmt}} ± {std[key]:{fmt}}" if key in mean else "n/a"

    seeds = ", ".join(map(str, summary["seeds"]))
    command = f"oodgen demo --out DIR --seeds {' '.join(map(str, summary['seeds']))} --budget {summary['budget']}"
    rows = [("in-distribution accuracy (%)", "accuracy.{m}", ".2f")]
    rows += [(f"AUROC {name} (%)", f"auroc.{{m}}.{name}", ".1f") for name in S.OOD_SETS]
    rows += [(f"FPR at 95 % TPR {name} (%)", f"metrics.{{m}}.{name}.fpr95", ".1f") for name in S.OOD_SETS]
    rows += [("rim coverage (on-manifold boundary)", "coverage.{m}.rim", ".3f"),
             ("shell coverage (off-manifold boundary)", "coverage.{m}.shell", ".3f"),
             ("distance from sphere, mean", "coverage.{m}.radial_mean", ".3f"),
             ("distance from sphere, std", "coverage.{m}.radial_std", ".3f")]
    lines = [
        "# Sphere toy (paper appendix A): generated boundary outliers vs a jointly trained GAN",
        "",
        f"Budget `{summary['budget']}`, seeds {seeds}; mean ± std over seeds (ddof 1). "
        f"Wall time {summary['wall_s']:.1f} s. Produced by `{command}`.",
        "",
        "Data: two classes on the unit sphere, caps of "
        f"{S.CAP_ANGLE_DEG:.2f}° around ±(1,1,1)/√3. OOD test sets: `off_sphere` (uniform directions, radius in "
        "[0.5,0.9]∪[1.1,1.5]), `off_sphere_near` (same radii above/below the classes), `on_sphere_outside` "
        "(on the sphere, >10° outside both classes).",
        "",
        "| quantity | ours (CVAE Type I + II, n+1 classifier) | GAN + confident classifier |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {pm(key.format(m='ours'), fmt)} | {pm(key.format(m='gan'), fmt)} |"
              for label, key, fmt in rows]
    lines += [
        "",
        f"Coverage: fraction of boundary points with a generated sample within {summary['coverage_tol_deg']:.0f}° "
        f"(same number of samples, {summary['budget_settings']['n_coverage']}, for both methods; ours is half "
        "Type I, half Type II); see `oodgen.toy.coverage`. Type I alone: rim "
        f"{pm('coverage.ours_type1.rim', '.3f')}, shell {pm('coverage.ours_type1.shell', '.3f')}; Type II alone: rim "
        f"{pm('coverage.ours_type2.rim', '.3f')}, shell {pm('coverage.ours_type2.shell', '.3f')}.",
        "",
        "Scores (higher = more OOD): ours p(OOD class); GAN 1 − max softmax.",
        "",
        "## Figures (seed " + str(summary["seeds"][0]) + ")",
        "",
    ]
    lines += [f"![{f}]({f})" for f in summary["figures"]]
    return "\n".join(lines) + "\n"


def run_demo(out_dir, seed: int | None = None, budget: str = "default", seeds: tuple[int, ...] | None = None,
             log=print) -> dict:
    """Run the toy for ``seeds`` (default (0, 1, 2); ``seed`` alone runs one seed) and write the
    summary and figures to ``out_dir``; returns the summary dict.

    Parameters
    ----------
    out_dir : folder for summary.json, summary.md and the PNGs (created).
    seed : a single seed; ignored when ``seeds`` is given.
    budget : ``"default"`` (under a minute on 2 CPU cores for 3 seeds) or ``"tiny"`` (seconds, tests).
    seeds : the seeds to run; figures come from the first.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; use one of {sorted(BUDGETS)}")
    if seeds is None:
        seeds = (seed,) if seed is not None else (0, 1, 2)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("no seeds given")
    b = BUDGETS[budget]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed, figures = [], []
    # Batches of 128-256 three-dimensional points: thread start-up and synchronisation cost more
    # than they save (on a busy 2-core machine, 30x more), so the demo runs single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, s in enumerate(seeds):
            numbers, art = run_seed(s, b)
            per_seed.append(numbers)
            log(f"seed {s}: accuracy {numbers['accuracy']['ours']:.1f} %, AUROC off-sphere ours "
                f"{numbers['auroc']['ours']['off_sphere']:.1f} / GAN {numbers['auroc']['gan']['off_sphere']:.1f}, "
                f"rim coverage ours {numbers['coverage']['ours']['rim']:.2f} / GAN "
                f"{numbers['coverage']['gan']['rim']:.2f}")
            if i == 0:
                figures = write_figures(out, art, b)
    finally:
        torch.set_num_threads(threads)
    mean, std = aggregate(per_seed)
    summary = {
        "format": "oodgen-toy-demo/1",
        "budget": budget,
        "budget_settings": asdict(b),
        "seeds": list(seeds),
        "data": {"cap_angle_deg": S.CAP_ANGLE_DEG, "centres": S.CENTRES.tolist(),
                 "off_sphere_radii": [list(r) for r in S.OFF_SPHERE_RADII], "ood_sets": list(S.OOD_SETS)},
        "type1_beta": list(TOY_BETA),
        "coverage_tol_deg": per_seed[0]["coverage"]["ours"]["tol_deg"],
        "scores": {"ours": "p(OOD class) of the n+1 classifier", "gan": "1 - max softmax of the confident classifier"},
        "mean": mean,
        "std": std,
        "per_seed": per_seed,
        "figures": figures,
        "wall_s": time.perf_counter() - t0,
        "environment": environment(),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "summary.md", markdown_summary(summary).encode())
    log(f"wrote {out / 'summary.md'} ({summary['wall_s']:.1f} s)")
    return summary


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, budget=args.budget, seeds=tuple(args.seeds))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``oodgen demo`` to an argparse sub-parser collection."""
    p = subparsers.add_parser("demo", help="the paper's 3-D sphere toy: generated outliers vs a GAN, with figures",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (summary.json, summary.md, PNGs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (figures from the first)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="default",
                   help="default: under a minute on 2 cores; tiny: seconds, numbers meaningless")
    p.set_defaults(func=_cmd_demo)
    return p
