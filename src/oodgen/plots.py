"""Figures (PNG) with matplotlib's Agg renderer: sample grids, ROC curves, score histograms.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, safe in
threads, leaves the user's backend alone), writes ``path`` and returns it.  A PNG is exactly
``figsize * dpi`` pixels (no tight bounding box), so callers can size figures for a page.

Colours are shared by the whole project (:data:`COLOURS`): in-distribution is blue, OOD sets
take the next colours of matplotlib's ``tab10`` in the order given, Type I outliers red,
Type II green, GAN samples purple.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from .metrics import ood_metrics, roc_points

TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
         "#bcbd22", "#17becf")
COLOURS = {"in": TAB10[0], "class0": TAB10[0], "class1": TAB10[1], "type1": TAB10[3], "type2": TAB10[2],
           "gan": TAB10[4], "ood": TAB10[7]}
OOD_CYCLE = (TAB10[3], TAB10[1], TAB10[2], TAB10[4], TAB10[5], TAB10[6], TAB10[7], TAB10[8], TAB10[9])


def ood_colour(i: int) -> str:
    """Colour of the i-th OOD set in a figure."""
    return OOD_CYCLE[i % len(OOD_CYCLE)]


def _save(fig: Figure, path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _as_hwc(images) -> np.ndarray:
    """(N, 1, H, W), (N, H, W), (N, 3, H, W) or (N, H, W, 3) in [0, 1] -> (N, H, W, C) float."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4 and arr.shape[1] in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)          # torch's (N, C, H, W) wins when both layouts fit
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3, "
                         f"got {np.shape(images)}")
    if len(arr) == 0:
        raise ValueError("no images to plot")
    return np.clip(arr, 0.0, 1.0)


def tile(images, nrow: int = 8, pad: int = 2, pad_value: float = 0.5) -> np.ndarray:
    """Images laid out ``nrow`` per row (torchvision's convention) with ``pad`` pixels between."""
    arr = _as_hwc(images)
    n, h, w, c = arr.shape
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    out = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return out[..., 0] if c == 1 else out


def sample_grid(images, path, nrow: int = 8, title: str | None = None, figsize: tuple[float, float] | None = None,
                dpi: int = 100) -> Path:
    """A grid of images; ``images`` may also be a mapping {panel title: images} for panels side
    by side (e.g. source images next to the outliers generated from them).

    Parameters
    ----------
    images : array or tensor (N, 1, H, W) / (N, H, W) / (N, H, W, 3) in [0, 1], or a mapping of them.
    nrow : images per row.
    title : figure title.
    figsize : inches; default about 0.45 inch per 28-pixel image.
    dpi : the PNG is figsize * dpi pixels.
    """
    panels = dict(images) if isinstance(images, Mapping) else {"": images}
    if not panels:
        raise ValueError("no images to plot")
    tiles = {name: tile(imgs, nrow) for name, imgs in panels.items()}
    if figsize is None:
        h = max(t.shape[0] for t in tiles.values())
        w = sum(t.shape[1] for t in tiles.values())
        scale = 0.45 / 28
        figsize = (max(2.0, w * scale + 0.3 * len(tiles)), max(1.5, h * scale + (0.6 if title else 0.3)))
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, len(tiles), squeeze=False)[0]
    for ax, (name, t) in zip(axes, tiles.items()):
        ax.imshow(t, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
        if name:
            ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)


def roc_curves(scores_in, scores_out: Mapping[str, np.ndarray], path, title: str | None = None,
               figsize: tuple[float, float] = (5.0, 5.0), dpi: int = 100) -> Path:
    """ROC curves (in-distribution positive, scores higher = more OOD), one per OOD set, AUROC in the legend."""
    if not scores_out:
        raise ValueError("no OOD score sets to plot")
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1, label="chance")
    for i, (name, s_out) in enumerate(scores_out.items()):
        fpr, tpr = roc_points(scores_in, s_out)
        auroc = ood_metrics(scores_in, s_out)["auroc"]
        ax.plot(fpr, tpr, color=ood_colour(i), lw=1.5, label=f"{name} (AUROC {auroc:.1f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (OOD accepted)")
    ax.set_ylabel("true positive rate (in-distribution accepted)")
    ax.set_title(title or "ROC, in-distribution positive", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)


def score_histograms(scores_in, scores_out: Mapping[str, np.ndarray], path, bins: int = 40,
                     title: str | None = None, score_name: str = "OOD score (higher = more OOD)",
                     log: bool = True, ncols: int = 3, figsize: tuple[float, float] | None = None,
                     dpi: int = 100) -> Path:
    """One panel per OOD set: the in-distribution score histogram against that set's.

    Bars are fractions of each set (sets of different sizes compare); ``log`` puts the y axis on
    a log scale, since scores of a good detector pile up at the two ends.
    """
    if not scores_out:
        raise ValueError("no OOD score sets to plot")
    s_in = np.asarray(scores_in, dtype=np.float64)
    outs = {k: np.asarray(v, dtype=np.float64) for k, v in scores_out.items()}
    allv = np.concatenate([s_in, *outs.values()])
    allv = allv[np.isfinite(allv)]
    if allv.size == 0:
        raise ValueError("scores contain no finite values")
    lo, hi = float(allv.min()), float(allv.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    n = len(outs)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=figsize or (3.6 * ncols, 2.8 * nrows + (0.4 if title else 0.0)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (name, s_out) in enumerate(outs.items()):
        ax = axes[i]
        ax.hist(s_in, bins=edges, weights=np.full(len(s_in), 1.0 / max(1, len(s_in))), color=COLOURS["in"],
                alpha=0.45, label="in-distribution", log=log)
        ax.hist(s_out, bins=edges, weights=np.full(len(s_out), 1.0 / max(1, len(s_out))), color=ood_colour(i),
                histtype="step", lw=1.5, label=name, log=log)
        ax.set_xlabel(score_name, fontsize=8)
        ax.set_ylabel("fraction of samples", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
