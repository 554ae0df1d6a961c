"""Hostile and careless inputs (issue 30): no silent wrong result, no lost output, no traceback, and
failing before training, not after.  One test per finding, then a bounded fuzz test.

Every refusal is checked the same way (:func:`refused`): exit status 2, one line
``oodgen CMD: error: ...`` on stderr that says what is wrong, and no stack trace anywhere.  The runs
are on 8x8 grey images (smoke profile, one CVAE attempt): seconds each.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from oodgen.cli import main
from oodgen.config import RunConfig
from oodgen.data.images import load_inputs
from oodgen.data.user import UserDataError, load_user, stratified_head
from oodgen.detectors.base import InputError
from oodgen.preflight import MIN_LATENT, fit_small_data
from oodgen.run import load_setting
from oodgen.score import load_detector

SHAPE = (1, 8, 8)
RUN = ["--profile", "smoke", "--no-progress", "--cvae-retries", "0"]


def _blobs(n_per_class: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 8, 8) images, sorted by class (class c: a bright band at rows 3c, 3c + 1)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.uniform(0, 0.2, (len(y), *SHAPE[1:]))
    for c in range(classes):
        x[y == c, (3 * c) % 8:(3 * c) % 8 + 2] += 0.7
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), y


def _npz(path: Path, n_per_class: int, classes: int, seed: int = 0) -> Path:
    x, y = _blobs(n_per_class, classes, seed)
    np.savez(path, x=x, y=y)
    return path


def _cli(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), which must hold ``needles``."""
    rc, out, err = result
    assert "Traceback" not in out + err and 'File "' not in out + err
    assert rc == 2, (rc, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A grey 8x8 run on a class-sorted set of 3 classes x 400 (the smoke profile keeps 600 of the
    960 training images), with an OOD set that repeats one training image.  The same command first
    ran with an ``--ood`` folder of 12x12 images: refused before training, it must leave nothing
    that blocks the corrected command, which is this run."""
    d = tmp_path_factory.mktemp("tiny")
    train = _npz(d / "train.npz", 400, 3)
    x, _ = _blobs(400, 3)
    other = np.random.default_rng(1).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    other[7] = x[5]
    np.savez(d / "other.npz", x=other)
    (d / "wrong").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(d / "wrong" / f"{i}.png")
    out = d / "run"
    cmd = ["run", "--train", train, "--out", out, *RUN]
    failed = _captured(cmd + ["--ood", f"other={d / 'wrong'}"])
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    rc, log, err = _captured(cmd + ["--ood", f"other={d / 'other.npz'}"])
    assert rc == 0, err
    return SimpleNamespace(dir=d, out=out, train=train, failed=failed, left_after_failure=left,
                           log=log, metrics=json.loads((out / "metrics.json").read_text()))


def _captured(argv) -> tuple[int, str, str]:
    """:func:`_cli` where capsys is not at hand (a module fixture)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _png(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _scores(run_dir, files, tmp_path, capsys, *extra) -> list[dict]:
    out = tmp_path / f"s{time.monotonic_ns()}.json"
    rc, _, err = _cli(["score", run_dir, *files, "--out", out, "-q", *extra], capsys)
    assert rc == 0, err
    return json.loads(out.read_text())["results"]


# ----------------------------------------------------------------------------- silent wrong results

def test_16bit_png_scores_as_its_8bit_twin(tiny, tmp_path, capsys):
    """A 16-bit PNG (v * 257) is the 8-bit image v exactly: same pixels, score and decision, for a run
    on your own data (scoring and training folders) and for the 28x28 path."""
    x, _ = _blobs(2, 3, seed=3)
    f8 = [_png(tmp_path / f"{i}-8.png", a) for i, a in enumerate(x)]
    f16 = [_png(tmp_path / f"{i}-16.png", a.astype(np.uint16) * 257) for i, a in enumerate(x)]
    assert Image.open(f16[0]).mode == "I;16"
    s8, s16 = _scores(tiny.out, f8, tmp_path, capsys), _scores(tiny.out, f16, tmp_path, capsys)
    np.testing.assert_allclose([r["score"] for r in s16], [r["score"] for r in s8], rtol=1e-6)
    assert [r["decision"] for r in s16] == [r["decision"] for r in s8]
    for bits in (8, 16):                     # a training folder of 16-bit images reads the same
        for i, f in enumerate(f8 if bits == 8 else f16):
            (tmp_path / f"f{bits}" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp_path / f"f{bits}" / f"c{i % 2}" / f"{i}.png")
    np.testing.assert_array_equal(load_user(tmp_path / "f16", labelled=False).images,
                                  load_user(tmp_path / "f8", labelled=False).images)
    digit = (np.arange(784).reshape(28, 28) % 256).astype(np.uint8)
    a, _ = load_inputs([_png(tmp_path / "d8.png", digit)])
    b, _ = load_inputs([_png(tmp_path / "d16.png", digit.astype(np.uint16) * 257)])
    np.testing.assert_array_equal(a, b)


def test_own_data_trains_no_plain_classifier(tiny):
    """Nothing scores a plain classifier on your own data, so none is trained unless asked (--plain);
    the built-in settings train it (oodgen bench's baselines score it)."""
    assert not (tiny.out / "checkpoints" / "plain.pt").exists()
    assert "accuracy_plain" not in tiny.metrics and "plain_training" not in tiny.metrics["timings_s"]
    assert RunConfig(train="x.npz").trains_plain is False and RunConfig(train="x.npz", plain=True).trains_plain
    assert RunConfig(id="mnist").trains_plain and not RunConfig(id="mnist", plain=False).trains_plain


def test_smaller_profile_keeps_every_class(tiny):
    """The smoke profile's 600 of a class-sorted 3 x 400 set keep all three classes; the detector's
    class count is the class list's."""
    det = load_detector(tiny.out)
    assert det.n_classes_ == 3 and det.classes_ == ["0", "1", "2"]
    assert "3 classes" in tiny.log
    data = load_setting(RunConfig(train=str(tiny.train), profile="smoke"))
    x, y, xv, yv, yt = data.x, data.y, data.x_val, data.y_val, data.y_test
    assert set(y.tolist()) == set(yt.tolist()) == {0, 1, 2}
    assert len(x) + len(xv) == 600 and np.bincount(np.r_[y.numpy(), yv.numpy()]).tolist() == [200, 200, 200]
    assert np.bincount(np.repeat([0, 1, 2], [990, 5, 5])[stratified_head(np.repeat([0, 1, 2], [990, 5, 5]), 10)]
                       ).tolist() == [8, 1, 1]


def test_animated_png_is_refused(tiny, tmp_path, capsys):
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    apng = tmp_path / "anim.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:])
    refused(_cli(["score", tiny.out, apng], capsys), "anim.png", "animated image (2 frames)")
    refused(_cli(["score", tiny.out, apng, "--resize"], capsys), "animated")
    with pytest.raises(InputError, match="animated"):
        load_inputs([apng])                                        # the 28x28 path too
    (tmp_path / "ood").mkdir()
    shutil.copy(apng, tmp_path / "ood" / "a.png")
    with pytest.raises(UserDataError, match="animated"):
        load_user(tmp_path / "ood", labelled=False)


def test_another_format_under_a_png_name_is_refused(tmp_path):
    """A TIFF of float pixels named .png would have been clipped to 0/1 as it was converted."""
    (tmp_path / "c").mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "c" / "x.png", format="TIFF")
    with pytest.raises(UserDataError, match="x.png: a TIFF image, not PNG or JPEG"):
        load_user(tmp_path, labelled=False)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view) reads as
    it is shown."""
    upright = np.zeros((28, 28), np.uint8)
    upright[2:26, 12:16] = 255                     # a vertical bar, as a '1'
    stored = np.ascontiguousarray(np.rot90(upright, 1))      # what the camera wrote: the bar lies flat
    exif = Image.Exif()
    exif[0x0112] = 6
    _png(tmp_path / "one.jpg", stored, exif=exif, quality=100)
    x, _ = load_inputs([tmp_path / "one.jpg"])
    assert np.abs(x[0, 0] - upright / 255).max() < 0.1
    (tmp_path / "folder").mkdir()
    shutil.copy(tmp_path / "one.jpg", tmp_path / "folder" / "one.jpg")
    assert np.abs(load_user(tmp_path / "folder", labelled=False).images[0, 0] - upright / 255).max() < 0.1


# ----------------------------------------------------------------------------- lost output

@pytest.mark.parametrize("target, message", [
    ("under_file/s.csv", "is not a folder"),
    ("/proc/oodgen-scores.csv", "cannot write in /proc"),
    ("a_folder.csv", "is a folder"),
])
def test_out_path_is_checked_before_scoring(tiny, tmp_path, capsys, monkeypatch, target, message):
    (tmp_path / "under_file").write_text("a file")
    (tmp_path / "a_folder.csv").mkdir()
    png = _png(tmp_path / "x.png", _blobs(1, 1)[0][0])

    def never(*_a, **_k):
        raise AssertionError("scored before the output path was checked")
    monkeypatch.setattr("oodgen.score.score_files", never)
    out = target if target.startswith("/") else tmp_path / target
    refused(_cli(["score", tiny.out, png, "--out", out], capsys), message)


def test_scores_survive_a_failed_write(tiny, tmp_path, capsys, monkeypatch):
    png = _png(tmp_path / "x.png", _blobs(1, 1)[0][0])

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("oodgen.utils.atomic_write_bytes", disk_full)
    result = _cli(["score", tiny.out, png, "--out", tmp_path / "s.csv", "-q"], capsys)
    refused(result, "No space left on device", "printed above")
    rows = result[1].splitlines()
    assert rows[0].split() == ["name", "score", "decision", "class"] and rows[1].startswith(str(png))


def test_out_onto_an_existing_file_says_so(tiny, tmp_path, capsys):
    png = _png(tmp_path / "x.png", _blobs(1, 1)[0][0])
    (tmp_path / "s.csv").write_text("precious\n")
    rc, _, err = _cli(["score", tiny.out, png, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert rc == 0 and "replacing the file there" in err
    rc, _, err = _cli(["score", tiny.out, png, "--out", tmp_path / "new.csv", "-q"], capsys)
    assert rc == 0 and "replacing" not in err


# ----------------------------------------------------------------------------- tracebacks

def _npy_bytes(shape, descr="|u1", data: bytes = b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data


def test_huge_array_headers_are_refused(tiny, tmp_path, capsys):
    """Headers that claim 40 GB in a file of a few bytes: refused before numpy allocates anything."""
    huge = (40_000_000, 32, 32)
    (tmp_path / "huge.npy").write_bytes(_npy_bytes(huge))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy_bytes(huge))
        z.writestr("y.npy", _npy_bytes((40_000_000,), "<i8"))
    for name in ("huge.npy", "huge.npz"):
        refused(_cli(["score", tiny.out, tmp_path / name], capsys), name, "header claims", "38.1 GiB")
    refused(_cli(["run", "--train", tmp_path / "huge.npz", "--out", tmp_path / "r", *RUN], capsys),
            "huge.npz", "header claims")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(0, 2 ** 40), max_size=4),
       descr=st.sampled_from(["|u1", "<f4", "<f8", ">i2", "|b1", "<c16", "<U3", "|V7"]),
       n_bytes=st.integers(0, 4096))
def test_any_npy_header_is_read_or_refused(shape, descr, n_bytes):
    """Whatever shape and dtype a header claims, over however many bytes: images or an InputError."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.npy"
        path.write_bytes(_npy_bytes(shape, descr, bytes(n_bytes)))
        try:
            images, _ = load_inputs([path])
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            assert images.ndim == 4 and images.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize("command, file, content, message", [
    ("report", "metrics.json", "[]", "holds an array, not a JSON object"),
    ("compare", "metrics.json", "[]", "holds an array, not a JSON object"),
    ("report", "metrics.json", "{}", "a run on your own data"),
    ("compare", "metrics.json", "{}", "not the metrics of a finished"),
    ("run", "config.json", "[1, 2, 3]", "holds an array, not a JSON object"),
])
def test_valid_json_of_the_wrong_type(tiny, tmp_path, capsys, command, file, content, message):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny.out, run_dir)
    (run_dir / file).write_text(content)
    argv = {"run": ["run", "--train", tiny.train, "--out", run_dir, *RUN]}.get(command, [command, run_dir])
    line = refused(_cli(argv, capsys), message)
    assert message.startswith("a run") or f"{run_dir / file}" in line


# ----------------------------------------------------------------------------- failing late

def test_bad_ood_fails_before_training_and_blocks_nothing(tiny, tmp_path, capsys):
    rc, out, err = tiny.failed
    refused(tiny.failed, "OOD set other", "(1, 12, 12)", "(1, 8, 8)")
    assert "[cvae]" not in out and tiny.left_after_failure == []      # no config.json: the fix ran (fixture)
    assert tiny.metrics["n_ood"]["other"] == 30
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 12, 12), np.uint8))
    np.save(tmp_path / "wrong.npy", np.zeros((5, 8, 8), np.uint8))
    for bad, message in (("wrong.npz", "(1, 12, 12)"), ("wrong.npy", "not an image folder, .npz or IDX")):
        result = _cli(["run", "--train", tiny.train, "--ood", f"x={tmp_path / bad}", "--out", tmp_path / "r", *RUN],
                      capsys)
        refused(result, message)
        assert "[cvae]" not in result[1] and not (tmp_path / "r" / "config.json").exists()


def test_minimum_data_is_checked_up_front(tmp_path, capsys):
    """2 classes x 10 (the old README's minimum) cannot hold 20 validation images: refused before
    training, naming the minimum."""
    result = _cli(["run", "--train", _npz(tmp_path / "d.npz", 10, 2), "--out", tmp_path / "r", *RUN], capsys)
    refused(result, "too little data", "validation split has 16 images", "about 40 images")
    assert "[cvae]" not in result[1] and list((tmp_path / "r").iterdir()) == []


def test_three_classes_of_thirty_pass_the_checks():
    """3 x 30 failed after all training (18 calibration images); the validation split now keeps 20."""
    with tempfile.TemporaryDirectory() as d:
        cfg = RunConfig(train=str(_npz(Path(d) / "d.npz", 30, 3)), profile="smoke")
        data = load_setting(cfg)
    assert len(data.x_val) == 20
    latent, notes = fit_small_data(cfg.latent, data.y.numpy(), data.info["classes"], len(data.x_val), log=lambda *_: None)
    assert latent == cfg.latent and "latent_dim" not in notes.get("reduced", {})


def test_small_data_runs_and_says_what_it_reduced(tmp_path, capsys):
    """2 classes x 20, about the least that runs: a smaller latent and KNN k, said and recorded."""
    rc, out, err = _cli(["run", "--train", _npz(tmp_path / "d.npz", 20, 2), "--out", tmp_path / "r", "--plain", *RUN],
                        capsys)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (tmp_path / "r" / "checkpoints" / "plain.pt").exists() and "accuracy_plain" in metrics     # --plain
    reduced = metrics["data"]["reduced"]
    assert MIN_LATENT <= reduced["latent_dim"]["used"] < reduced["latent_dim"]["asked"] == 8
    assert reduced["pixel_knn_k"]["used"] < 50 and "small data: latent dimension reduced from 8" in out
    det = load_detector(tmp_path / "r", "reject+fisher")
    assert np.isfinite(det.score(np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32))).all()
    # the recommended rule's per-class banks hold every training image of these small classes (k = 1)
    rec = load_detector(tmp_path / "r", "recommended")
    assert np.isfinite(rec.score(np.random.default_rng(1).random((3, *SHAPE), dtype=np.float32))).all()
    assert {b.k for b in rec.class_pixel_bank_.banks.values()} == {1}
    n_bank = sum(len(b.images) for b in rec.class_pixel_bank_.banks.values())
    assert metrics["data"]["class_pixel_banks_bytes"] == n_bank * int(np.prod(SHAPE))


def test_class_bank_estimate():
    from oodgen.preflight import class_bank_mb
    # at most 5,000 images of a class are kept: 5,000 + 10 colour images of 32 x 32
    assert class_bank_mb(np.array([0] * 6000 + [1] * 10), (3, 32, 32)) == pytest.approx(5010 * 3072 / 1e6)


# ----------------------------------------------------------------------------- unclear messages

def test_mixed_sizes_name_the_odd_file(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            _png(tmp_path / c / f"{i}.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "b" / "odd.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(UserDataError, match=r"20 are 8x8, but b/odd.png is 12x10; pass size") as err:
        load_user(tmp_path)
    assert "0.png" not in str(err.value)


def test_damaged_json_is_named(tiny, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny.out, run_dir)
    (run_dir / "metrics.json").write_text('{"ood": ')
    refused(_cli(["compare", run_dir], capsys), f"{run_dir / 'metrics.json'}: not valid JSON")
    (run_dir / "config.json").write_bytes(b"\x80\x04\x95binary\xff")
    refused(_cli(["run", "--train", tiny.train, "--out", run_dir, *RUN], capsys),
            f"{run_dir / 'config.json'}: not a text file")


def test_unreadable_is_not_called_corrupt(tiny, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny.out, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "metrics.json").mkdir()
    line = refused(_cli(["compare", run_dir], capsys), "cannot read (Is a directory)")
    assert "damaged" not in line and "corrupt" not in line
    real_open = open

    def no_permission(path, *a, **k):
        if str(path).endswith("detector.pt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr("oodgen.utils.open", no_permission, raising=False)
    line = refused(_cli(["score", run_dir, tiny.train], capsys), "cannot open detector file (Permission denied)")
    assert "damaged" not in line and "corrupt" not in line


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_crafted_file_never_suggests_unsafe_loading(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"format": _Payload(marker)}, tmp_path / "detector.pt")
    line = refused(_cli(["score", tmp_path, tmp_path / "x.png"], capsys), "refused unread")
    assert "weights_only" not in line and "will likely succeed" not in line and "False" not in line
    assert not marker.exists()


def test_grey_palette_png_is_grey(tiny, tmp_path, capsys):
    a = _blobs(1, 1, seed=4)[0][0]
    grey, palette = _png(tmp_path / "l.png", a), tmp_path / "p.png"
    Image.fromarray(a).convert("P").save(palette)
    assert Image.open(palette).mode == "P"
    s = _scores(tiny.out, [grey, palette], tmp_path, capsys)
    assert s[0]["score"] == s[1]["score"]


def test_colour_array_for_a_grey_run_asks_for_grey(tiny, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((8, 8, 3), np.uint8))
    line = refused(_cli(["score", tiny.out, tmp_path / "c.npy"], capsys), "(3, 8, 8)", "convert them to grey")
    assert "--resize" not in line


def test_ood_set_that_repeats_training_images(tiny, tmp_path, capsys):
    """The training set given as --ood is refused before training; one repeated image of 30 is said
    and recorded (the fixture's run)."""
    result = _cli(["run", "--train", tiny.train, "--ood", f"same={tiny.train}", "--out", tmp_path / "r", *RUN], capsys)
    refused(result, "--ood same", "are also in-distribution", "must come from elsewhere")
    assert "[cvae]" not in result[1] and not (tmp_path / "r" / "config.json").exists()
    assert tiny.metrics["data"]["ood_overlap"] == {"other": 1}
    assert "warning: --ood other: 1 of its 30 images are also in-distribution" in tiny.log


def test_csv_neutralises_formulas(tiny, tmp_path, capsys, monkeypatch):
    """A name a spreadsheet would run as a formula gets a leading ' (OWASP); the JSON keeps it as is."""
    names = ["=HYPERLINK(1).png", "+1.png", "-1.png", "@sum.png", "\tx.png", "plain.png"]
    for n in names:
        _png(tmp_path / n, _blobs(1, 1)[0][0])
    monkeypatch.chdir(tmp_path)                  # the names as given are the file names
    rc, _, err = _cli(["score", "--out", "s.csv", "-q", "--", tiny.out, *names], capsys)
    assert rc == 0, err
    with open(tmp_path / "s.csv", newline="") as fh:
        cells = [r["name"] for r in csv.DictReader(fh)]
    assert cells == ["'" + n for n in names[:-1]] + ["plain.png"]
    assert [r["name"] for r in _scores(tiny.out, ["./" + n for n in names], tmp_path, capsys)] == names


# ----------------------------------------------------------------------------- fuzz

def _random_json(rng, depth=0):
    keys = ["ood", "score", "variant", "cvae_health", "auroc", "latent_var", "id", "config", "precision",
            "sphere_radius", "format", "x", ""]
    kind = rng.integers(0, 8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return [int(rng.integers(-10, 10)), float(rng.normal() * 1e3), float("nan")][rng.integers(3)]
    if kind == 3:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, rng.integers(0, 12)))
    if kind == 4:
        return rng.choice(["paper", "ood-class", "fp32", "custom", "mnist"])
    if kind in (5, 6):
        return {str(rng.choice(keys)): _random_json(rng, depth + 1) for _ in range(rng.integers(0, 5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.integers(0, 4))]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _random_png(rng) -> bytes:
    """A PNG with valid chunk CRCs, random header fields and random pixel data."""
    w, h = (int(v) for v in rng.integers(1, 64, 2)) if rng.random() < 0.8 else (int(rng.integers(1, 2 ** 31)), 1 << 14)
    depth = int(rng.choice([1, 2, 4, 8, 16, 3]))
    colour = int(rng.choice([0, 2, 3, 4, 6, 5]))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(rng.integers(0, 2)))
    body = rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
    idat = zlib.compress(body) if rng.random() < 0.7 else body
    extra = _chunk(b"PLTE", rng.integers(0, 256, 3 * int(rng.integers(1, 20)), dtype=np.uint8).tobytes()) \
        if colour == 3 else b""
    frames = _chunk(b"acTL", struct.pack(">II", 2, 0)) if rng.random() < 0.1 else b""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + frames + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _random_npy(rng) -> bytes:
    shape = tuple(int(v) for v in rng.integers(0, [2 ** 40, 64, 64, 4][:rng.integers(0, 5)]))
    descr = str(rng.choice(["|u1", "<f4", "<f8", "<i8", "|b1", "<c8", "<U2", "|O", "<m8", "xx"]))
    header = repr({"descr": descr, "fortran_order": bool(rng.integers(2)), "shape": shape})
    if rng.random() < 0.2:                      # a damaged header
        header = header[:int(rng.integers(0, len(header)))] + "".join(chr(int(c)) for c in rng.integers(32, 127, 5))
    header = header.encode("latin1", "replace")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    data = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _random_input(rng) -> bytes:
    kind = rng.integers(0, 6)
    noise = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
    if kind == 0:
        return noise
    if kind == 1:
        return _random_png(rng)
    if kind == 2:
        return _random_npy(rng)
    if kind == 3:                                     # an .npz of a random .npy
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED][rng.integers(2)]) as z:
            z.writestr(str(rng.choice(["x.npy", "images.npy", "y"])), _random_npy(rng))
        data = buf.getvalue()
        return data if rng.random() < 0.7 else data[:int(rng.integers(4, len(data)))]
    if kind == 4:
        return b"\xff\xd8\xff" + noise                # a JPEG start
    return bytes([0, 0, 8, int(rng.integers(1, 5))]) + noise     # an IDX header


def test_fuzz_never_a_traceback(tiny, tmp_path, capsys):
    """Random bytes, random PNG / NPY headers and random JSON to `oodgen score`, `report`, `compare`
    and a run directory: each ends with exit 0 or a one-line error (exit 2), never a traceback.
    Bounded: a fixed seed and 200 cases (about 20 s on 2 cores)."""
    rng = np.random.default_rng(30)
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.out, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    real = {name: (run_dir / name).read_bytes() for name in ("detector.pt", "metrics.json", "config.json")}
    image = _png(tmp_path / "image.png", _blobs(1, 1)[0][0])
    seen = set()
    for case in range(200):
        target = ["score", "score", "score", "report", "compare", "config", "detector"][case % 7]
        for name, data in real.items():
            (run_dir / name).write_bytes(data)
        if target == "score":
            f = tmp_path / f"in{case}.{rng.choice(['png', 'npy', 'bin'])}"
            f.write_bytes(_random_input(rng))
            argv = ["score", run_dir, f, "-q"] + (["--resize"] if rng.random() < 0.3 else [])
        elif target in ("report", "compare", "config"):
            data = json.dumps(_random_json(rng)) if rng.random() < 0.8 else rng.bytes(int(rng.integers(0, 200)))
            if target != "config" and rng.random() < 0.5:        # a real metrics.json, one entry changed
                m = json.loads(real["metrics.json"])
                m[str(rng.choice(list(m)))] = _random_json(rng)
                data = json.dumps(m)
            (run_dir / ("config.json" if target == "config" else "metrics.json")).write_bytes(
                data.encode() if isinstance(data, str) else data)
            argv = (["run", "--train", tiny.train, "--out", run_dir, *RUN] if target == "config"
                    else [target, run_dir])
        else:
            blob = bytearray(real["detector.pt"])
            for i in rng.integers(0, len(blob), int(rng.integers(1, 20))):
                blob[i] = int(rng.integers(0, 256))
            (run_dir / "detector.pt").write_bytes(bytes(blob) if rng.random() < 0.7 else rng.bytes(300))
            argv = ["score", run_dir, image, "-q", "--score", str(rng.choice(["ood-class", "reject+fisher"]))]
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:                 # argparse
            rc = exc.code
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err, (case, argv, out.err)
        assert rc in (0, 2), (case, argv, rc, out.err)
        if rc == 2:
            assert len(out.err.strip().splitlines()) == 1, (case, argv, out.err)
            seen.add(re.sub(r"\S*/\S*|\d+", "_", out.err.split(": error: ")[-1])[:40])
        assert not (run_dir / "checkpoints").exists(), (case, argv)        # nothing trained
    assert len(seen) > 20, seen                   # the cases reached many different checks
