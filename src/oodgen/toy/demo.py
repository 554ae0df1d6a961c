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
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from ..detectors.oodgen import nplus1_scores
from ..metrics import ood_metrics, threshold_at_tpr
from ..plots import COLOURS
from ..utils import atomic_write_bytes, atomic_write_json, environment, generator
from . import sphere as S
from .coverage import boundary_coverage
from .gan import ConfidentGAN, mlp
from .generator import TOY_BETA, VectorCVAE, fit_class_ellipsoids, train_vector_cvae, type1_samples, type2_samples


@dataclass(frozen=True)
class Budget:
    n_train: int
    n_val: int
    n_test: int                # in-distribution test points, and points of each OOD set
    cvae_steps: int
    classifier_steps: int
    gan_steps: int
    pool_size: int             # Type I and Type II outliers per regeneration, each
    regen_every: int           # classifier steps between outlier-pool regenerations
    n_coverage: int            # generated samples per method scored by coverage (and plotted)
    map_resolution: int        # decision-map pixels per 180 degrees of latitude


BUDGETS = {
    "default": Budget(n_train=2000, n_val=500, n_test=1000, cvae_steps=1200, classifier_steps=1500,
                      gan_steps=2000, pool_size=1000, regen_every=300, n_coverage=1000, map_resolution=180),
    "tiny": Budget(n_train=300, n_val=100, n_test=200, cvae_steps=60, classifier_steps=60, gan_steps=60,
                   pool_size=150, regen_every=30, n_coverage=200, map_resolution=30),
}
HIDDEN = 64
BATCH = 128                    # in-distribution points per classifier step (+ BATCH/2 of each outlier type)
OOD_CLASS_COLOURS = ListedColormap(["#aec7e8", "#ffbb78", "#d9d9d9"])    # class 0, class 1, OOD (light)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


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

def _scatter_data(ax, train: S.PointSet, three_d: bool, n_max: int = 1500) -> None:
    pts, lab = train.points[:n_max], train.labels[:n_max]
    for k in (0, 1):
        p = pts[lab == k]
        if three_d:
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=2, color=COLOURS[f"class{k}"], label=f"class {k}", alpha=0.6)
        else:
            ax.scatter(p[:, 0], p[:, 1], s=2, color=COLOURS[f"class{k}"], label=f"class {k}", alpha=0.6)


def _fig3d(path: Path, train: S.PointSet, extra: np.ndarray, extra_label: str, colour: str, title: str) -> Path:
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot(projection="3d")
    _scatter_data(ax, train, True)
    ax.scatter(extra[:, 0], extra[:, 1], extra[:, 2], s=3, color=colour, label=extra_label, alpha=0.7)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    lim = max(1.0, float(np.abs(extra).max()) if len(extra) else 1.0)
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(-lim, lim)
    # A camera 40 degrees off the class axis shows both caps as ellipses, not edge-on.
    ax.view_init(elev=25, azim=-20)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, markerscale=4)
    fig.savefig(path, dpi=100)
    return path


def _tangent_coords(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of the points' directions on the tangent plane at ``centre``,
    for the points on ``centre``'s hemisphere."""
    d = points / np.clip(np.linalg.norm(points, axis=1, keepdims=True), 1e-12, None)
    keep = d @ centre > 0
    u, v = S.tangent_basis(centre)
    return d[keep] @ u, d[keep] @ v


def _fig2d(path: Path, train: S.PointSet, extra: np.ndarray, extra_label: str, colour: str, title: str) -> Path:
    fig = Figure(figsize=(9, 4.6))
    axes = fig.subplots(1, 2)
    rim = math.sin(math.radians(S.CAP_ANGLE_DEG))
    phi = np.linspace(0, 2 * math.pi, 200)
    for k, ax in enumerate(axes):
        c = S.CENTRES[k]
        for j in (0, 1):
            a, b = _tangent_coords(train.points[train.labels == j], c)
            ax.scatter(a, b, s=2, color=COLOURS[f"class{j}"], alpha=0.5, label=f"class {j}")
        a, b = _tangent_coords(extra, c)
        ax.scatter(a, b, s=4, color=colour, alpha=0.8, label=extra_label)
        ax.plot(rim * np.cos(phi), rim * np.sin(phi), ls="--", lw=0.8, color="0.3", label="class boundary")
        ax.set_aspect("equal")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_xlabel("u (tangent plane at class centre)")
        ax.set_ylabel("v")
        ax.set_title(f"hemisphere of class {k} (directions, orthographic)", fontsize=9)
        ax.legend(fontsize=7, markerscale=3, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _predict_ours(classifier: nn.Module, pts: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return classifier(_tensor(pts.astype(np.float32))).argmax(1).numpy()


def _predict_gan(gan: ConfidentGAN, threshold: float, pts: np.ndarray) -> np.ndarray:
    t = _tensor(pts.astype(np.float32))
    pred = gan.logits(t).argmax(1).numpy()
    return np.where(gan.score(t) > threshold, 2, pred)


def _fig_regions(path: Path, art: dict, resolution: int) -> Path:
    nlat, nlon = resolution, 2 * resolution
    lat = np.linspace(-90, 90, nlat)
    lon = np.linspace(-180, 180, nlon)
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    sphere_pts = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    # Slice: the plane through the origin spanned by the class axis c0 and w, holding both class centres.
    c0 = S.CENTRES[0]
    w = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    normal = np.cross(c0, w)
    ext = 1.6
    g = np.linspace(-ext, ext, 2 * resolution)
    ga, gb = np.meshgrid(g, g, indexing="xy")
    slice_pts = (ga.reshape(-1, 1) * c0 + gb.reshape(-1, 1) * w)
    train = art["train"]
    d = train.points.astype(np.float64)
    lat_d = np.degrees(np.arcsin(np.clip(d[:, 2], -1, 1)))
    lon_d = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    near = np.abs(d @ normal) < 0.08
    predictors = {"ours: n+1 classifier (argmax)": lambda p: _predict_ours(art["classifier"], p),
                  "GAN confident classifier (OOD if score > 95%-TPR threshold)":
                      lambda p: _predict_gan(art["gan_model"], art["gan_threshold"], p)}
    fig = Figure(figsize=(12, 9))
    axes = fig.subplots(2, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    phi = np.linspace(0, 2 * math.pi, 200)
    for row, (name, predict) in enumerate(predictors.items()):
        ax = axes[row, 0]
        ax.imshow(predict(sphere_pts).reshape(nlat, nlon), origin="lower", extent=(-180, 180, -90, 90),
                  cmap=OOD_CLASS_COLOURS, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
        for k in (0, 1):
            m = train.labels == k
            ax.scatter(lon_d[m][:400], lat_d[m][:400], s=1, color=COLOURS[f"class{k}"], label=f"class {k} data")
        ax.set_xlabel("longitude (deg)")
        ax.set_ylabel("latitude (deg)")
        ax.set_title(f"{name}: predicted class on the unit sphere", fontsize=9)
        ax.legend(fontsize=7, markerscale=4, loc="lower left")
        ax = axes[row, 1]
        ax.imshow(predict(slice_pts).reshape(len(g), len(g)), origin="lower", extent=(-ext, ext, -ext, ext),
                  cmap=OOD_CLASS_COLOURS, vmin=0, vmax=2, interpolation="nearest")
        ax.plot(np.cos(phi), np.sin(phi), color="0.3", lw=0.8, ls="--", label="unit sphere")
        for k in (0, 1):
            m = near & (train.labels == k)
            ax.scatter(d[m] @ c0, d[m] @ w, s=3, color=COLOURS[f"class{k}"], label=f"class {k} data")
        ax.set_xlabel("along c0 = (1,1,1)/sqrt(3)")
        ax.set_ylabel("along (1,-1,0)/sqrt(2)")
        ax.set_title("slice through both class centres", fontsize=9)
        ax.legend(fontsize=7, markerscale=3, loc="lower right")
    handles = [Patch(color=OOD_CLASS_COLOURS(i), label=lab) for i, lab in enumerate(
        ["predicted class 0", "predicted class 1", "predicted OOD"])]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    return path


def write_figures(out: Path, art: dict, budget: Budget) -> list[str]:
    """The first seed's figures; returns their file names."""
    train = art["train"]
    paths = [
        _fig3d(out / "fig5a_type1_3d.png", train, art["type1"], "Type I (off-manifold)", COLOURS["type1"],
               "Fig. 5a: data with Type I (off-manifold) boundary outliers"),
        _fig3d(out / "fig5b_type2_3d.png", train, art["type2"], "Type II (on-manifold)", COLOURS["type2"],
               "Fig. 5b: data with Type II (on-manifold) boundary outliers"),
        _fig2d(out / "fig5c_type2_2d.png", train, art["type2"], "Type II", COLOURS["type2"],
               "Fig. 5c: Type II outliers around each class (2-D projection)"),
        _fig3d(out / "fig4a_gan_3d.png", train, art["gan"], "GAN samples", COLOURS["gan"],
               "Fig. 4a: data with samples of the jointly trained GAN"),
        _fig2d(out / "fig4b_gan_2d.png", train, art["gan"], "GAN samples", COLOURS["gan"],
               "Fig. 4b: GAN samples around each class (2-D projection)"),
        _fig_regions(out / "fig1b_decision_regions.png", art, budget.map_resolution),
    ]
    return [p.name for p in paths]


# --------------------------------------------------------------------------------------------- summary

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
