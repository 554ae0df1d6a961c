"""Figures of the 3-D sphere toy (``oodgen demo``): Fig. 5a/5b/5c (Type I, Type II in 3-D and in
the 2-D tangent plane), Fig. 4 (GAN samples) and Fig. 1b-style decision regions on and around the
sphere, drawn from the artefacts of :func:`oodgen.toy.demo.run_seed`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from ..plots import COLOURS
from . import sphere as S
from .budget import Budget
from .gan import ConfidentGAN


OOD_CLASS_COLOURS = ListedColormap(["#aec7e8", "#ffbb78", "#d9d9d9"])    # class 0, class 1, OOD (light)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


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
