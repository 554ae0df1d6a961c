"""Scoring with a trained detector: ``oodgen.score`` and ``oodgen score``."""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from oodgen.data import load, write_idx
from oodgen.detectors.base import InputError
from oodgen.data.images import load_inputs
from oodgen.config import RECOMMENDED
from oodgen.score import DetectorFileError, add_parser, load_detector
from oodgen.detectors.oodgen import SCORES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One smoke-profile MNIST run (seconds; its numbers mean nothing beyond 'it trained')."""
    from oodgen.config import RunConfig, Variant
    from oodgen.run import run
    out = tmp_path_factory.mktemp("run")
    # the paper's score on the paper's (linear) last layer as the primary one: these tests are about p(n+1)'s
    # range and thresholds (a smoke-sized cosine head keeps p(n+1) under the 0.5 that rejects)
    run(RunConfig(id="mnist", profile="smoke", variant=Variant(score="paper", head="linear")), out, progress=False,
        log=lambda *_a: None)
    return out


@pytest.fixture(scope="module")
def det(run_dir):
    return load_detector(run_dir)


@pytest.fixture(scope="module")
def mnist_test():
    te = load("mnist", "test", n=40)
    return (te.images[:, 0] * 255).round().astype(np.uint8), te.labels


def _png(path, arr, mode="L"):
    Image.fromarray(arr).convert(mode).save(path)
    return str(path)


def _cli_wired() -> bool:
    from oodgen import cli
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.build_parser().parse_args(["score", "d", "x"])
            return True
        except SystemExit:
            return False


def cli(argv: list[str]) -> int:
    """``oodgen.cli.main`` once ``score`` is wired into it; until then the same dispatch and
    error handling over a parser built with :func:`oodgen.score.add_parser`."""
    if _cli_wired():
        from oodgen.cli import main
        return main(argv)
    ap = argparse.ArgumentParser(prog="oodgen")
    add_parser(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args(argv)
    try:
        return a.func(a)
    except ValueError as exc:
        print(f"oodgen {a.command}: error: {exc}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------- the detector

def test_load_detector_matches_run(run_dir, det):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert det.n_classes_ == 10
    assert det.score_rule == metrics["score"] == "ood-class"
    assert det.threshold_ == pytest.approx(metrics["threshold_95tpr"], abs=0)
    assert set(det.thresholds_) == set(SCORES)


def test_feature_knn_threshold_of_an_older_file(tmp_path, run_dir):
    """A detector file written before feature-knn was a rule has no stored threshold for it: it is the 95 %
    quantile of the stored calibration distances, exactly what `oodgen run` now stores, and scores agree."""
    import shutil
    from oodgen.metrics import threshold_at_tpr
    from oodgen.utils import atomic_torch_save
    new = load_detector(run_dir, "feature-knn")
    blob = torch.load(run_dir / "detector.pt", weights_only=True)
    assert new.threshold_ == blob["thresholds"]["feature-knn"] == threshold_at_tpr(blob["fusion"]["calib_knn"].numpy())
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    del blob["thresholds"]["feature-knn"]
    atomic_torch_save(blob, old / "detector.pt")
    again = load_detector(old, "feature-knn")
    assert again.score_rule == "feature-knn" and again.threshold_ == new.threshold_
    x = load("notmnist", "test", n=6).images
    np.testing.assert_array_equal(again.score(x), new.score(x))
    # the distance itself, not p(n+1)
    assert not np.array_equal(again.score(x), load_detector(run_dir, "ood-class").score(x))


def test_guard_threshold_of_an_older_file(tmp_path, run_dir):
    """A detector file written before the pixel guard has no stored threshold for it: every calibration image's
    guard score is d / (1 + d) of its feature distance (none lies beyond the largest calibration pixel distance),
    so its 95 % quantile is what `oodgen run` now stores; scores agree."""
    import shutil
    from oodgen.detectors.fusion import GUARD_RULE
    from oodgen.utils import atomic_torch_save
    new = load_detector(run_dir, GUARD_RULE)
    blob = torch.load(run_dir / "detector.pt", weights_only=True)
    assert new.score_rule == GUARD_RULE and new.threshold_ == pytest.approx(blob["thresholds"][GUARD_RULE], rel=1e-12)
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    del blob["thresholds"][GUARD_RULE]
    atomic_torch_save(blob, old / "detector.pt")
    again = load_detector(old, GUARD_RULE)
    assert again.threshold_ == pytest.approx(new.threshold_, rel=1e-12)
    x = load("notmnist", "test", n=6).images
    np.testing.assert_array_equal(again.score(x), new.score(x))


def test_a_file_without_the_class_banks(tmp_path, run_dir):
    """A detector file written before the class guard (no class pixel banks) loads for every other rule (the
    recommended one too), and asking it for the class guard names what is missing and the rule that works."""
    import shutil
    from oodgen.artifact import DetectorFileError
    from oodgen.config import RECOMMENDED
    from oodgen.detectors.fusion import CLASS_GUARD_RULE, GUARD_RULE
    from oodgen.utils import atomic_torch_save
    assert RECOMMENDED == GUARD_RULE
    blob = torch.load(run_dir / "detector.pt", weights_only=True)
    assert len(blob["class_pixel_bank"]["banks"]) == blob["n_classes"]
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    del blob["class_pixel_bank"]
    atomic_torch_save(blob, old / "detector.pt")
    with pytest.raises(DetectorFileError, match="class pixel banks.*" + re.escape(GUARD_RULE)):
        load_detector(old, CLASS_GUARD_RULE)
    x = load("notmnist", "test", n=6).images
    np.testing.assert_array_equal(load_detector(old, "recommended").score(x), load_detector(run_dir, GUARD_RULE).score(x))
    np.testing.assert_array_equal(load_detector(old, GUARD_RULE).score(x), load_detector(run_dir, GUARD_RULE).score(x))


def test_score_predict_decide(det, mnist_test):
    x_u8, labels = mnist_test
    x = x_u8[:, None].astype(np.float32) / 255
    notmnist = load("notmnist", "test", n=40).images
    s_in, s_out = det.score(x), det.score(notmnist)
    assert s_in.dtype == np.float64 and s_in.shape == (40,)
    assert np.all((s_in >= 0) & (s_in <= 1))
    # The smoke run separates notMNIST well (AUROC ~99); a floor, not an exact value.
    assert s_out.mean() > s_in.mean() + 0.1
    assert np.array_equal(det.decide(x), s_in > det.threshold_)
    assert np.array_equal(det.decide(x, threshold=2.0), np.zeros(40, bool))
    assert np.array_equal(det.predict(x), det.decide(x).astype(np.int64))
    pred = det.predict_class(x)
    assert pred.shape == (40,) and pred.min() >= 0 and pred.max() < 10
    assert (pred == labels).mean() > 0.3
    logits = det.logits(torch.from_numpy(x))
    assert np.array_equal(pred, logits[:, :10].argmax(1).numpy())


def test_score_rejects_nan(det):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.score(x)


def test_missing_detector(tmp_path):
    with pytest.raises(DetectorFileError, match="no trained detector"):
        load_detector(tmp_path)


def test_corrupt_detector(tmp_path):
    (tmp_path / "detector.pt").write_bytes(b"\x80\x02garbage" * 10)
    with pytest.raises(DetectorFileError, match="cannot read detector file"):
        load_detector(tmp_path)


def test_unknown_format_and_bad_weights(tmp_path, run_dir):
    blob = torch.load(run_dir / "detector.pt", weights_only=False)
    torch.save({**blob, "format": "oodgen-detector/99"}, tmp_path / "detector.pt")
    with pytest.raises(DetectorFileError, match="unknown detector format 'oodgen-detector/99'"):
        load_detector(tmp_path)
    torch.save({**blob, "n_classes": 5}, tmp_path / "detector.pt")
    with pytest.raises(DetectorFileError, match="do not fit a Fig6cCNN with 6 outputs"):
        load_detector(tmp_path)
    torch.save({**blob, "score": "energy"}, tmp_path / "detector.pt")
    with pytest.raises(DetectorFileError, match="unknown score rule"):
        load_detector(tmp_path / "detector.pt")


# ----------------------------------------------------------------------------- input files

def test_png_npy_idx_agree(tmp_path, det, mnist_test):
    x_u8 = mnist_test[0][:5]
    pngs = [_png(tmp_path / f"{i}.png", a) for i, a in enumerate(x_u8)]
    np.save(tmp_path / "a.npy", x_u8)
    write_idx(tmp_path / "a-idx3-ubyte.gz", x_u8)
    images, names = load_inputs(pngs + [tmp_path / "a.npy", tmp_path / "a-idx3-ubyte.gz"])
    assert images.shape == (15, 1, 28, 28) and images.dtype == np.float32
    assert names[0] == pngs[0] and names[5] == f"{tmp_path / 'a.npy'}[0]"
    assert names[14] == f"{tmp_path / 'a-idx3-ubyte.gz'}[4]"
    np.testing.assert_array_equal(images[:5], images[5:10])
    np.testing.assert_array_equal(images[:5], images[10:])
    np.testing.assert_array_equal(images[:5, 0], x_u8 / np.float32(255))
    s = det.score(images)
    np.testing.assert_array_equal(s[:5], s[5:10])


def test_array_shapes_and_dtypes(tmp_path, mnist_test):
    x_u8 = mnist_test[0][:3]
    f = x_u8.astype(np.float64) / 255
    for name, arr in {"one.npy": x_u8[0], "flat.npy": x_u8.reshape(3, 784),
                      "chan.npy": f[:, None], "f32.npy": f.astype(np.float32)}.items():
        np.save(tmp_path / name, arr)
    np.savez(tmp_path / "z.npz", images=x_u8, labels=np.arange(3))
    images, names = load_inputs([tmp_path / n for n in ("one.npy", "flat.npy", "chan.npy", "f32.npy", "z.npz")])
    assert len(images) == 1 + 3 + 3 + 3 + 3
    assert names[0] == str(tmp_path / "one.npy")
    for k in range(1, 13, 3):
        np.testing.assert_allclose(images[k:k + 3], images[1:4], atol=1e-7)


def test_picture_modes(tmp_path, mnist_test):
    a = mnist_test[0][0]
    base, _ = load_inputs([_png(tmp_path / "l.png", a)])
    rgb, _ = load_inputs([_png(tmp_path / "rgb.png", a, "RGB")])
    rgba, _ = load_inputs([_png(tmp_path / "rgba.png", a, "RGBA")])   # fully opaque: accepted
    la, _ = load_inputs([_png(tmp_path / "la.png", a, "LA")])
    jpg = tmp_path / "x.jpg"
    Image.fromarray(a).save(jpg, quality=100)
    j, _ = load_inputs([jpg])
    for other in (rgb, rgba, la):
        np.testing.assert_array_equal(base, other)
    assert np.abs(j - base).max() < 0.1       # JPEG is lossy


def test_color_uses_luminance(tmp_path):
    red = np.zeros((28, 28, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    x, _ = load_inputs([tmp_path / "red.png"])
    assert x.max() == pytest.approx(76 / 255, abs=1 / 255)     # 0.299 * 255, ITU-R 601-2


def test_resize_square(tmp_path, mnist_test):
    a = mnist_test[0][0]
    big = np.kron(a, np.ones((2, 2), np.uint8))       # 56x56, every pixel doubled
    Image.fromarray(big).save(tmp_path / "big.png")
    x, _ = load_inputs([tmp_path / "big.png"])
    np.testing.assert_allclose(x[0, 0], a / 255, atol=1e-5)    # BOX undoes the doubling
    Image.fromarray(a[::2, ::2]).save(tmp_path / "small.png")   # 14x14: enlarged with LANCZOS
    x, _ = load_inputs([tmp_path / "small.png"])
    assert x.shape == (1, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("case, message", [
    ("nonsquare", "is 30x28, not square"),
    ("transparent", "transparent pixels"),
    ("wrong_shape", "accepted shapes are"),
    ("nan", "contain NaN or Inf"),
    ("range", r"must be in \[0, 1\], got range \[-0.5, 1\]"),
    ("above", r"must be in \[0, 1\], got range \[0, 255\]"),
    ("int64", "must be uint8"),
    ("empty_array", "holds no images"),
    ("empty_file", "file is empty"),
    ("text", "unrecognised file type"),
    ("missing", "file not found"),
    ("npz_many", "holds several arrays"),
    ("bad_idx", "truncated"),
])
def test_bad_inputs(tmp_path, case, message):
    p = tmp_path / f"{case}.bin"
    if case == "nonsquare":
        Image.fromarray(np.zeros((28, 30), np.uint8)).save(p, format="PNG")
    elif case == "transparent":
        rgba = np.full((28, 28, 4), 255, np.uint8)
        rgba[0, 0, 3] = 0
        Image.fromarray(rgba).save(p, format="PNG")
    elif case == "wrong_shape":
        np.save(p, np.zeros((2, 32, 32), np.uint8))
        p = p.with_suffix(".bin.npy")
    elif case == "nan":
        a = np.zeros((2, 28, 28), np.float32)
        a[1, 5, 5] = np.nan
        np.save(p, a)
        p = p.with_suffix(".bin.npy")
    elif case == "range":
        a = np.zeros((28, 28))
        a[0, 0], a[0, 1] = -0.5, 1.0
        np.save(p, a)
        p = p.with_suffix(".bin.npy")
    elif case == "above":
        np.save(p, np.linspace(0, 255, 784).reshape(28, 28))
        p = p.with_suffix(".bin.npy")
    elif case == "int64":
        np.save(p, np.zeros((28, 28), np.int64))
        p = p.with_suffix(".bin.npy")
    elif case == "empty_array":
        np.save(p, np.zeros((0, 28, 28), np.uint8))
        p = p.with_suffix(".bin.npy")
    elif case == "empty_file":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("hello")
    elif case == "npz_many":
        np.savez(p, a=np.zeros((28, 28), np.uint8), b=np.zeros((28, 28), np.uint8))
        p = p.with_suffix(".bin.npz")
    elif case == "bad_idx":
        p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\x00" * 100)
    with pytest.raises(InputError, match=message) as err:
        load_inputs([p])
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_no_inputs():
    with pytest.raises(InputError, match="no input files"):
        load_inputs([])


# ----------------------------------------------------------------------------- command line

def test_cli_csv_and_json(tmp_path, run_dir, det, mnist_test, capsys):
    x_u8 = mnist_test[0][:3]
    pngs = [_png(tmp_path / f"{i}.png", a) for i, a in enumerate(x_u8)]
    write_idx(tmp_path / "n-idx3-ubyte", (load("notmnist", "test", n=4).images[:, 0] * 255).astype(np.uint8))
    inputs = pngs + [str(tmp_path / "n-idx3-ubyte")]
    assert cli(["score", str(run_dir), *inputs, "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].split() == ["name", "score", "decision", "class"] and len(lines) == 1 + 7
    assert "7 image(s)" in out.err
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["name"] for r in rows] == pngs + [f"{tmp_path / 'n-idx3-ubyte'}[{i}]" for i in range(4)]
    images, _ = load_inputs(inputs)
    np.testing.assert_array_equal([float(r["score"]) for r in rows], det.score(images))
    assert [r["decision"] for r in rows] == ["ood" if o else "in" for o in det.decide(images)]
    assert [int(r["predicted_class"]) for r in rows] == list(det.predict_class(images))

    assert cli(["score", str(run_dir), *inputs, "--out", str(tmp_path / "s.json"), "--threshold", "-1", "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["threshold"] == -1 and doc["score_rule"] == "ood-class"
    assert [r["decision"] for r in doc["results"]] == ["ood"] * 7
    assert [r["score"] for r in doc["results"]] == [float(r["score"]) for r in rows]


def test_other_rule_of_the_same_run(tmp_path, run_dir, det, capsys):
    """Any rule of the run, with its own stored threshold, from Python and from the CLI."""
    x = load("notmnist", "test", n=6).images
    for rule in ("max-in", "feature-knn", "reject+knn", "reject+fisher"):
        other = load_detector(run_dir, rule)
        assert other.score_rule == rule and other.threshold_ == det.thresholds_[rule]
        s = other.score(x)
        assert s.shape == (6,) and np.all(np.isfinite(s))
        assert not np.array_equal(s, det.score(x))
    np.testing.assert_array_equal(load_detector(run_dir, "ood-class").score(x), det.score(x))
    # the aliases: "paper" is p(n+1) here (max-in for mnist0-4), "recommended" the protocol's winner
    assert load_detector(run_dir, "paper").score_rule == "ood-class"
    assert load_detector(run_dir, "recommended").score_rule == RECOMMENDED
    with pytest.raises(ValueError, match="unknown score rule"):
        load_detector(run_dir, "fisher")
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    assert cli(["score", str(run_dir), str(npy), "--score", "reject+fisher", "--out", str(tmp_path / "f.json"), "-q"]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["score_rule"] == "reject+fisher"
    np.testing.assert_allclose([r["score"] for r in doc["results"]], load_detector(run_dir, "reject+fisher").score(x))
    assert "score reject+fisher" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--out", "x.txt"], "unknown extension '.txt'"),
    (["--threshold", "nan"], "threshold must be a finite number"),
])
def test_cli_bad_options(run_dir, mnist_test, tmp_path, capsys, extra, message):
    png = _png(tmp_path / "a.png", mnist_test[0][0])
    assert cli(["score", str(run_dir), png, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_errors_are_one_line(tmp_path, run_dir, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((28, 28), np.nan))
    assert cli(["score", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oodgen score: error: ") and "NaN" in err
    assert len(err.strip().splitlines()) == 1
    assert cli(["score", str(tmp_path / "nowhere"), str(bad)]) == 2
    assert "no trained detector" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_precisions_agree_and_reject_fisher_skips_rejected_exactly(run_dir):
    """bf16 scoring moves scores by float rounding only; reject+fisher computes the image statistics
    for accepted images alone and gives exactly the scores of the full computation."""
    from oodgen.detectors.fusion import rejected
    from oodgen.detectors.image_stats import image_stats
    from oodgen.detectors.oodgen import nplus1_scores, rule_scores
    from oodgen.detectors.posthoc import model_outputs
    x = np.concatenate([load("mnist", "test", n=30).images, load("uniform", "test", n=30).images])
    f32 = load_detector(run_dir, "reject+fisher", precision="fp32")
    b16 = load_detector(run_dir, "reject+fisher", precision="bf16")
    assert f32.precision == "fp32" and b16.precision == "bf16"
    assert next(b16.inference_classifier().parameters()).dtype == torch.bfloat16
    assert next(b16.stats_cvae().parameters()).dtype == torch.bfloat16
    lf, lb = f32.logits(x), b16.logits(x)
    assert lb.dtype == torch.float32
    assert (lf - lb).abs().max() <= 0.05 * lf.abs().max() + 0.05
    # exact cascade: the full statistics of every image give the same scores
    xt = torch.from_numpy(x)
    out = model_outputs(f32.inference_classifier(), xt, ("features", "logits"))
    logits = torch.from_numpy(out["logits"])
    p = nplus1_scores(logits, "ood-class")
    assert rejected(p).any() and not rejected(p).all()      # both branches are exercised
    full = image_stats(f32.stats_cvae(), f32.pixel_bank_, xt, logits[:, :-1].argmax(1))
    want = rule_scores(("reject+fisher",), logits, out["features"], f32.fusion_, full)["reject+fisher"]
    np.testing.assert_array_equal(f32.score(x), want)
    part = image_stats(f32.stats_cvae(), f32.pixel_bank_, xt, logits[:, :-1].argmax(1), only=~rejected(p))
    for k in full:
        assert np.all(np.isnan(part[k][rejected(p)]))
        np.testing.assert_allclose(part[k][~rejected(p)], full[k][~rejected(p)], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown precision"):
        load_detector(run_dir, precision="fp16")
    assert load_detector(run_dir).precision == "fp32"           # the default: the run's own scores
