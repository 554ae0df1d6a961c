"""Plot helpers write PNGs of the requested pixel size with something drawn on them."""
import numpy as np
import pytest
import torch
from PIL import Image

from oodgen.plots import roc_curves, sample_grid, score_histograms, tile


def _png(path):
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert len(np.unique(np.asarray(im.convert("L")))) > 2
        return im.size


def test_tile_layout():
    imgs = np.zeros((5, 1, 3, 3))
    for i in range(5):
        imgs[i] = i / 10
    t = tile(imgs, nrow=2, pad=1, pad_value=1.0)
    assert t.shape == (3 * 4 + 1, 2 * 4 + 1)
    assert t[1, 1] == 0.0 and t[1, 5] == 0.1 and t[5, 1] == 0.2 and t[9, 1] == 0.4
    assert t[9, 5] == 1.0                         # the empty sixth cell is padding
    with pytest.raises(ValueError, match="shape"):
        tile(np.zeros((2, 5)))


def test_sample_grid_size(tmp_path):
    rng = np.random.default_rng(0)
    p = sample_grid(rng.random((12, 1, 28, 28)), tmp_path / "g.png", nrow=4, title="t", figsize=(4, 3), dpi=50)
    assert _png(p) == (200, 150)
    p = sample_grid({"left": torch.rand(6, 28, 28), "right": rng.random((6, 28, 28, 3))}, tmp_path / "pair.png",
                    nrow=3, figsize=(6, 2.5), dpi=80)
    assert _png(p) == (480, 200)
    assert _png(sample_grid(rng.random((3, 1, 28, 28)), tmp_path / "default.png")) > (100, 100)
    with pytest.raises(ValueError):
        sample_grid(np.zeros((0, 1, 28, 28)), tmp_path / "empty.png")


def test_roc_curves_size(tmp_path):
    rng = np.random.default_rng(0)
    s_in = rng.normal(0, 1, 200)
    p = roc_curves(s_in, {"far": rng.normal(3, 1, 150), "near": rng.normal(0.5, 1, 100)}, tmp_path / "roc.png",
                   figsize=(5, 4), dpi=60)
    assert _png(p) == (300, 240)
    with pytest.raises(ValueError, match="no OOD"):
        roc_curves(s_in, {}, tmp_path / "x.png")


def test_score_histograms_size(tmp_path):
    rng = np.random.default_rng(0)
    outs = {f"set{i}": rng.random(50) for i in range(4)}
    p = score_histograms(rng.random(80), outs, tmp_path / "h.png", figsize=(8, 5), dpi=50, title="scores")
    assert _png(p) == (400, 250)
    # Constant scores (a saturated detector) still plot.
    p = score_histograms(np.zeros(10), {"all-ood": np.ones(10)}, tmp_path / "c.png", figsize=(3, 3), dpi=40)
    assert _png(p) == (120, 120)
    p = score_histograms(np.zeros(10), {"same": np.zeros(10)}, tmp_path / "s.png", figsize=(3, 3), dpi=40, log=False)
    assert _png(p) == (120, 120)
