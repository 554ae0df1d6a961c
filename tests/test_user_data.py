"""Your own data: image folders and .npz arrays of any size, grey or colour, end to end through
`oodgen run --train` (smoke profile) and `oodgen score` (a colour PNG for a colour run)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oodgen.cli import main as cli
from oodgen.data import load
from oodgen.data.coloured import tint
from oodgen.data.user import MIN_PER_CLASS, UserDataError, load_user, split


def _png(path, arr):
    from PIL import Image
    a = np.round(np.asarray(arr) * 255).astype(np.uint8)
    Image.fromarray(a if a.ndim == 2 else a.transpose(1, 2, 0)).save(path)


def _blobs(n=60, shape=(3, 16, 16), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(0, 0.2, (n, *shape)).astype(np.float32)
    for c in range(classes):
        x[y == c, c % shape[0]] += 0.6
    return np.clip(x, 0, 1), y


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
def test_npz_layouts_and_label_remap(tmp_path, layout):
    x, y = _blobs(shape=(1, 12, 8) if layout == "nhw" else (3, 12, 8))
    arr = {"nchw": x, "nhwc": x.transpose(0, 2, 3, 1), "nhw": x[:, 0]}[layout]
    np.savez(tmp_path / "d.npz", x=(arr * 255).round().astype(np.uint8), y=y * 10 + 7)
    d = load_user(tmp_path / "d.npz")
    assert d.images.shape == (60, 1 if layout == "nhw" else 3, 12, 8) and d.images.dtype == np.float32
    assert d.classes == ["7", "17", "27"] and set(d.labels) == {0, 1, 2}
    np.testing.assert_allclose(d.images, np.round(x * 255) / 255 if layout != "nhw" else np.round(x * 255) / 255, atol=1e-6)
    resized = load_user(tmp_path / "d.npz", size=(16, 16), channels=3)
    assert resized.images.shape == (60, 3, 16, 16)


def test_clear_errors(tmp_path):
    x, y = _blobs()
    cases = {
        "nolabels.npz": dict(x=x),
        "nan.npz": dict(x=np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y=y),
        "range.npz": dict(x=x * 3, y=y),
        "int16.npz": dict(x=(x * 255).astype(np.int16), y=y),
        "one_class.npz": dict(x=x, y=np.zeros(len(x), np.int64)),
        "few.npz": dict(x=x[:MIN_PER_CLASS + 2], y=np.r_[np.zeros(MIN_PER_CLASS), [1, 1]].astype(np.int64)),
        "ambiguous.npz": dict(x=np.zeros((30, 3, 5, 3), np.float32), y=np.arange(30) % 2),
        "floatlabels.npz": dict(x=x, y=y.astype(np.float32)),
    }
    expect = {"nolabels": "no labels", "nan": "NaN", "range": r"\[0, 1\]", "int16": "uint8",
              "one_class": "two classes", "few": "fewer than", "ambiguous": "channel axis", "floatlabels": "integers"}
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(UserDataError, match=expect[name.split(".")[0]]):
            load_user(tmp_path / name)
    with pytest.raises(UserDataError, match="no such"):
        load_user(tmp_path / "missing")
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(UserDataError, match="not an image folder"):
        load_user(tmp_path / "junk.bin")


def test_folder_errors(tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(MIN_PER_CLASS):
            _png(root / c / f"{i}.png", np.full((8, 8), 0.1 * i))
    assert load_user(root).images.shape == (2 * MIN_PER_CLASS, 1, 8, 8)
    _png(root / "a" / "big.png", np.zeros((10, 10)))
    with pytest.raises(UserDataError, match="different sizes"):
        load_user(root)
    assert load_user(root, size=(8, 8)).images.shape == (2 * MIN_PER_CLASS + 1, 1, 8, 8)
    (root / "a" / "big.png").unlink()
    _png(root / "b" / "colour.png", np.zeros((3, 8, 8)))
    with pytest.raises(UserDataError, match="mixes grey and colour"):
        load_user(root)
    assert load_user(root, channels=3).images.shape[1] == 3
    (root / "b" / "colour.png").unlink()
    from PIL import Image
    Image.new("RGBA", (8, 8), (255, 0, 0, 10)).save(root / "b" / "alpha.png")
    with pytest.raises(UserDataError, match="transparent"):
        load_user(root)
    (root / "b" / "alpha.png").unlink()
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserDataError, match="cannot read image"):
        load_user(root)
    (root / "b" / "broken.png").unlink()
    flat = tmp_path / "flat"
    flat.mkdir()
    _png(flat / "x.png", np.zeros((8, 8)))
    with pytest.raises(UserDataError, match="sub-folder per class"):
        load_user(flat)
    assert load_user(flat, labelled=False).labels.tolist() == [-1]


def test_split_is_seeded_and_keeps_every_class():
    x, y = _blobs(n=90)
    from oodgen.data.user import UserImages
    d = UserImages(x, y, ["a", "b", "c"], "mem")
    tr, te, idx = split(d, 0.2, seed=1)
    _, _, idx2 = split(d, 0.2, seed=1)
    np.testing.assert_array_equal(idx, idx2)
    assert len(te) == 18 and set(te.labels) == set(tr.labels) == {0, 1, 2}


def _coloured_mnist(tmp_path):
    m, f = load("mnist", "train"), load("fmnist", "test")
    np.savez(tmp_path / "train.npz", x=np.round(tint(m.images[:900], 0) * 255).astype(np.uint8), y=m.labels[:900])
    np.savez(tmp_path / "cfm.npz", x=np.round(tint(f.images[:300], 2) * 255).astype(np.uint8))
    return tmp_path / "train.npz", tmp_path / "cfm.npz"


def test_coloured_mnist_run_and_score_a_colour_png(tmp_path):
    train, cfm = _coloured_mnist(tmp_path)
    out = tmp_path / "run"
    rc = cli(["run", "--train", str(train), "--ood", f"cfmnist={cfm}", "--profile", "smoke",
              "--out", str(out), "--no-progress", "--beta", "wide", "--clip-type1", "half",
              "--colour-sigma", "0.01", "--latent", "12"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["id"] == "custom" and m["data"]["image_shape"] == [3, 28, 28]
    assert m["variant"]["colour_sigma"] == 0.01 and m["cvae_health"]["latent_dim"] == 12
    assert set(m["ood"]) == {"cfmnist", "gaussian", "uniform", "sphere"}
    # (the smoke profile's one CVAE epoch is too short to be healthy; the health is recorded all the same)
    assert "collapsed" in m["cvae_health"] and len(m["data"]["train_sha256"]) == 64
    # a colour PNG is scored; a grey one and a wrong size are refused with a reason
    _png(tmp_path / "c.png", tint(load("mnist", "test").images[:1], 5)[0])
    _png(tmp_path / "g.png", np.zeros((28, 28)))
    _png(tmp_path / "big.png", np.zeros((3, 32, 32)))
    assert cli(["score", str(out), str(tmp_path / "c.png"), "--out", str(tmp_path / "s.json"), "-q"]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert len(rows) == 1 and np.isfinite(rows[0]["score"])
    assert cli(["score", str(out), str(tmp_path / "g.png"), "-q"]) == 2
    assert cli(["score", str(out), str(tmp_path / "big.png"), "-q"]) == 2
    assert cli(["score", str(out), str(tmp_path / "big.png"), "--resize", "-q"]) == 0
    assert cli(["report", str(out)]) == 2          # not for custom runs yet: a clear error, not a traceback
    from oodgen.score import load_detector
    det = load_detector(out, "reject+fisher")
    assert det.image_shape_ == (3, 28, 28)
    assert det.score(torch.rand(4, 3, 28, 28)).shape == (4,)


def test_image_folder_round_trip_padded_32(tmp_path):
    """MNIST padded to 32 x 32 x 1, written as PNGs in class folders, trained from the folder."""
    m = load("mnist", "train")
    root = tmp_path / "digits"
    keep = np.flatnonzero(m.labels < 3)[:240]
    padded = np.pad(m.images[keep, 0], ((0, 0), (2, 2), (2, 2)))
    for i, (img, lab) in enumerate(zip(padded, m.labels[keep])):
        (root / f"class{lab}").mkdir(parents=True, exist_ok=True)
        _png(root / f"class{lab}" / f"{i}.png", img)
    out = tmp_path / "run"
    assert cli(["run", "--train", str(root), "--profile", "smoke", "--out", str(out), "--no-progress",
                "--latent", "6"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["cvae_health"]["latent_dim"] == 6
    assert m2["data"]["image_shape"] == [1, 32, 32] and m2["data"]["classes"] == ["class0", "class1", "class2"]
    assert m2["n_ood"]["sphere"] > 0
    assert cli(["score", str(out), str(root / "class1" / next((root / "class1").iterdir()).name), "-q"]) == 0
    # an unknown OOD path is a clear error before any training
    assert cli(["run", "--train", str(root), "--ood", "x=/nonexistent", "--profile", "smoke",
                "--out", str(tmp_path / "run2"), "--no-progress"]) == 2
