"""Figures and a report for a finished run directory (``oodgen run ... --out DIR``).

``oodgen figures DIR [--out DOCS_DIR]``
    The paper's Figure 3 for that run: ``<id>_type1.png`` (training images next to the Type I
    outliers generated from them) and ``<id>_type2.png`` (training images of each class next to
    Type II outliers of that class), from the run's CVAE (``DIR/detector.pt``) and its variant
    options (beta range, null-space method, clipping, Type II radius).

``oodgen report DIR``
    ``DIR/report.md`` (PNGs in ``DIR/report_files/``) and a self-contained ``DIR/report.html``
    (PNGs embedded as base64): ROC curves and score histograms of the in-distribution test set
    against every OOD set, the Figure 3 grids, the metrics table of ``DIR/metrics.json`` for every
    score rule, and the run's configuration.  Scores are recomputed from ``detector.pt`` on the
    same test and OOD samples the run evaluated (first ``n_eval`` of each set, the run's seed and
    Sphere-OOD radius), so the curves match ``metrics.json``.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data as D
from .config import CUSTOM_ID, Variant
from .generate import off_manifold_samples, on_manifold_samples
from .metrics import METRIC_NAMES
from .models import CVAE
from .plots import roc_curves, sample_grid, score_histograms
from .artifact import read_detector
from .score import load_detector
from .summary import METRIC_LABELS
from .train import fit_ellipsoids
from .utils import atomic_write_bytes, generator, read_json_object

ELLIPSOID_FIT_MAX = 10_000     # training images encoded to refit the Type II ellipsoids (quantiles barely move beyond)


class ReportError(ValueError):
    """The run directory lacks what a figure or the report needs."""


def _load_blob(run_dir: Path) -> dict[str, Any]:
    det = load_detector(run_dir)          # validates the file and the classifier weights
    _path, blob = read_detector(det.path_)
    for key in ("cvae", "config"):
        if key not in blob:
            raise ReportError(f"{det.path_}: detector file has no {key!r} entry; rerun `oodgen run` to rewrite it")
    for key in ("id", "latent_dim", "variant"):
        if key not in blob["config"]:
            raise ReportError(f"{det.path_}: the stored config lacks {key!r}; rerun `oodgen run` to rewrite it")
    blob["_detector"] = det
    return blob


def _load_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path}: no metrics; the run did not finish - run the same `oodgen run` command again")
    return read_json_object(path)


def _named_setting_only(setting: str, run_dir: Path) -> None:
    if setting == CUSTOM_ID:
        raise ReportError(f"{run_dir}: a run on your own data (--train); `oodgen report` and `oodgen figures` "
                          "know the paper's settings only so far - see its results.md, and score with `oodgen score`")


def load_run_cvae(blob: dict[str, Any]) -> CVAE:
    """The run's CVAE from a detector blob (eval mode)."""
    cfg = blob["config"]
    variant = Variant.from_dict(cfg["variant"])
    cvae = CVAE.for_variant(int(blob["n_classes"]), int(cfg["latent_dim"]), variant,
                            tuple(blob.get("image_shape", (1, 28, 28))))
    try:
        cvae.load_state_dict(blob["cvae"])
    except (RuntimeError, TypeError) as exc:
        raise ReportError(f"CVAE weights do not fit a CVAE with latent dimension {cfg['latent_dim']} "
                          f"({str(exc).splitlines()[0]})") from None
    return cvae.eval()


def _clip_mode(variant: Variant) -> bool | str:
    """The ``clip=`` argument of the Type I generator for a run's variant (runs written before
    ``clip_type1`` became a mode name stored a bool)."""
    if isinstance(variant.clip_type1, bool):
        return variant.clip_type1
    return variant.clip_mode()


def class_picks(y: torch.Tensor, n_per_class: int = 4, n_classes: int | None = None) -> torch.Tensor:
    """Indices of the first ``n_per_class`` images of each class 0..n_classes - 1 (default: max(y)),
    class by class (one Figure-3 row per class); :class:`ReportError` when a class has fewer."""
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    picks = [torch.nonzero(y == k).flatten()[:n_per_class] for k in range(n_classes)]
    if any(len(p) < n_per_class for p in picks):
        raise ReportError(f"fewer than {n_per_class} training images in some class")
    return torch.cat(picks)


def type2_grid(cvae, ellipsoids, x: torch.Tensor, y: torch.Tensor, path, *, radius: str,
               generator: torch.Generator, title: str, nrow: int = 4) -> Path:
    """Type II outliers of classes ``y`` (radius ``radius``) beside the training images ``x`` they
    stand for (the Figure 3 layout), written to ``path``: what a generator generates, to be looked at
    before any AUROC built on it is believed.  Used by :func:`figure3` and the sweep scripts."""
    type2 = on_manifold_samples(cvae, ellipsoids, y, radius=radius, generator=generator)
    return sample_grid({"training images": x, "Type II outliers (same class)": type2}, path, nrow=nrow, title=title)


def figure3(run_dir, out_dir=None, data_dir=None, n_per_class: int = 4, seed: int = 0) -> list[Path]:
    """Write ``<id>_type1.png`` and ``<id>_type2.png`` (paper Figure 3) for a run; returns the paths.

    Parameters
    ----------
    run_dir : a finished run directory (needs ``detector.pt``).
    out_dir : where to write; default ``run_dir/figures``.
    data_dir : folder searched first for the datasets.
    n_per_class : source images per class (one row per class).
    seed : seed of the outlier generation.

    The Type II ellipsoids are refitted on the first ``min(n_train, 10,000)`` training images
    (the run fitted them on its training split; the 95 % radius hardly moves).
    """
    run_dir = Path(run_dir)
    blob = _load_blob(run_dir)
    cfg = blob["config"]
    setting = cfg["id"]
    _named_setting_only(setting, run_dir)
    variant = Variant.from_dict(cfg["variant"])
    cvae = load_run_cvae(blob)
    n_classes = int(blob["n_classes"])
    n_train = (cfg.get("profile_settings") or {}).get("n_train")
    train = D.load(setting, "train", data_dir, n=min(n_train or ELLIPSOID_FIT_MAX, ELLIPSOID_FIT_MAX))
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    try:
        idx = class_picks(y_all, n_per_class, n_classes)
    except ReportError as exc:
        raise ReportError(f"{setting}: {exc}") from None
    x, y = x_all[idx], y_all[idx]
    gen = generator(seed, "figure3")
    clip = _clip_mode(variant)
    type1 = off_manifold_samples(cvae, x, y, beta=variant.beta_range(), nullspace=variant.nullspace,
                                 generator=gen, clip=clip)
    out = Path(out_dir) if out_dir is not None else run_dir / "figures"
    shown = "" if clip is True else " (shown clipped to [0, 1])"
    title1 = f"{setting}: Type I (off-manifold), beta {variant.beta}, one row per class"
    title2 = f"{setting}: Type II (on-manifold, {variant.type2_radius}), one row per class"
    return [
        sample_grid({"training images": x, f"Type I outliers{shown}": type1}, out / f"{setting}_type1.png",
                    nrow=n_per_class, title=title1),
        type2_grid(cvae, fit_ellipsoids(cvae, x_all, y_all), x, y, out / f"{setting}_type2.png",
                   radius=variant.type2_radius, generator=gen, title=title2, nrow=n_per_class),
    ]


def run_scores(run_dir, data_dir=None) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(in-distribution test scores, {OOD set: scores}, score rule) recomputed from ``detector.pt``
    on the samples the run evaluated, in the precision it evaluated in."""
    run_dir = Path(run_dir)
    metrics = _load_metrics(run_dir)
    # the precision the run evaluated in (runs before the option existed: float32)
    det = load_detector(run_dir, metrics.get("score"), precision=metrics.get("precision", "fp32"))
    cfg = det.config_
    setting = cfg.get("id") or metrics.get("id")
    _named_setting_only(setting, run_dir)
    n_eval = (cfg.get("profile_settings") or {}).get("n_eval")
    if "sphere_radius" not in metrics:
        raise ReportError(f"{run_dir / 'metrics.json'}: no 'sphere_radius'; rerun `oodgen run`")
    rule = det.score_rule
    test = D.load(setting, "test", data_dir, n=n_eval)
    score = det.score

    scores_out = {}
    for name in metrics.get("ood", {}) or D.ood_sets(setting, data_dir):
        ood = D.load(name, "test", data_dir, n=n_eval, seed=int(cfg.get("seed", metrics.get("seed", 0))),
                     sphere_radius=float(metrics["sphere_radius"]))
        scores_out[name] = score(ood.images)
    return score(test.images), scores_out, rule


# ----------------------------------------------------------------------------- report

def _metrics_rows(by_set: dict[str, dict[str, float]]) -> list[list[str]]:
    return [[name] + [f"{m[k]:.1f}" for k in METRIC_NAMES] for name, m in by_set.items()]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render(blocks: list[tuple], base: Path) -> tuple[str, str]:
    """Markdown (images linked relative to ``base``) and self-contained HTML of the same blocks."""
    md, body = [], []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            md.append(("# " if kind == "h1" else "## ") + args[0])
            body.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind == "p":
            md.append(args[0])
            body.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "table":
            md.append(_md_table(*args))
            body.append(_html_table(*args))
        elif kind == "img":
            path, caption = args
            md.append(f"![{caption}]({os.path.relpath(path, base)})")
            data = base64.b64encode(Path(path).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        elif kind == "pre":
            md.append("```\n" + args[0] + "\n```")
            body.append(f"<pre>{html.escape(args[0])}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f5f5f5;padding:1em;overflow-x:auto;font-size:12px}figcaption{color:#555}")
    title = html.escape(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "oodgen report"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return "\n\n".join(md) + "\n", page


def report(run_dir, data_dir=None) -> tuple[Path, Path]:
    """Write ``DIR/report.md`` (+ ``DIR/report_files/*.png``) and ``DIR/report.html``; returns both paths."""
    run_dir = Path(run_dir)
    metrics = _load_metrics(run_dir)
    files = run_dir / "report_files"
    s_in, s_out, rule = run_scores(run_dir, data_dir)
    setting = metrics.get("id", "?")
    roc = roc_curves(s_in, s_out, files / "roc.png", title=f"{setting}: ROC per OOD set (score {rule})")
    hist = score_histograms(s_in, s_out, files / "score_histograms.png",
                            title=f"{setting}: score {rule}, in-distribution test vs each OOD set",
                            score_name=f"{rule} score (higher = more OOD)")
    grids = figure3(run_dir, files, data_dir)
    header = ["OOD set"] + [METRIC_LABELS[k] for k in METRIC_NAMES]
    blocks: list[tuple] = [
        ("h1", f"oodgen report: {setting}, profile {metrics.get('profile')}, seed {metrics.get('seed')}"),
        ("p", f"Method {metrics.get('method', 'oodgen')}; primary score {rule} (higher = more OOD). "
              f"Accuracy of the n+1 classifier {metrics.get('accuracy', float('nan')):.2f} %, plain classifier "
              f"{metrics.get('accuracy_plain', float('nan')):.2f} %; {metrics.get('n_test_in', len(s_in))} "
              "in-distribution test images. Metrics in percent, in-distribution positive."),
        ("h2", f"Metrics (score {rule})"),
        ("table", header, _metrics_rows(metrics.get("ood", {}))),
    ]
    for other, by_set in (metrics.get("ood_by_score") or {}).items():
        if other != rule:
            blocks += [("h2", f"Metrics (score {other})"), ("table", header, _metrics_rows(by_set))]
    blocks += [
        ("h2", "ROC curves"), ("img", roc, "ROC curves, one per OOD set (AUROC in the legend)"),
        ("h2", "Score histograms"), ("img", hist, "OOD-score histograms: in-distribution test set vs each OOD set"),
        ("h2", "Generated outliers (paper Figure 3)"),
        ("img", grids[0], "Type I (off-manifold) outliers next to the training images they were generated from"),
        ("img", grids[1], "Type II (on-manifold) outliers next to training images of the same class"),
        ("h2", "Configuration"), ("pre", json.dumps(metrics.get("config", {}), indent=2)),
    ]
    if metrics.get("timings_s"):
        blocks += [("h2", "Timings (s)"),
                   ("table", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in metrics["timings_s"].items()])]
    if metrics.get("environment"):
        blocks += [("h2", "Environment"), ("pre", json.dumps(metrics["environment"], indent=2))]
    md, page = _render(blocks, run_dir)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    atomic_write_bytes(md_path, md.encode())
    atomic_write_bytes(html_path, page.encode())
    return md_path, html_path


# ----------------------------------------------------------------------------- CLI

def _cmd_figures(args: argparse.Namespace) -> int:
    for p in figure3(args.dir, args.out, args.data_dir, n_per_class=args.n_per_class, seed=args.seed):
        print(p)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    md_path, html_path = report(args.dir, args.data_dir)
    print(md_path)
    print(html_path)
    return 0


def add_parser(subparsers) -> None:
    """Add ``oodgen figures`` and ``oodgen report`` to an argparse sub-parser collection."""
    f = subparsers.add_parser("figures", help="paper Figure 3 (Type I / Type II sample grids) for a run directory")
    f.add_argument("dir", help="run directory written by `oodgen run`")
    f.add_argument("--out", default=None, help="output folder (default DIR/figures)")
    f.add_argument("--data-dir", default=None, help="folder searched first for datasets")
    f.add_argument("--n-per-class", type=int, default=4, help="source images per class (default 4)")
    f.add_argument("--seed", type=int, default=0, help="seed of the outlier generation")
    f.set_defaults(func=_cmd_figures)
    r = subparsers.add_parser("report", help="report.md and self-contained report.html for a run directory")
    r.add_argument("dir", help="run directory written by `oodgen run`")
    r.add_argument("--data-dir", default=None, help="folder searched first for datasets")
    r.set_defaults(func=_cmd_report)
