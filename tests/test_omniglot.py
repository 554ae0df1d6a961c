"""Omniglot from its publisher's PNG zips (oodgen.data.omniglot): the conversion the checked files were made
with, and a download that keeps only converted files whose contents match the known digests."""
from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from oodgen.data import download as dl
from oodgen.data.files import file_verifies
from oodgen.data.idx import read_idx
from oodgen.data.omniglot import box_matrix, downsample, read_archive
from oodgen.data.sources import SOURCES, FileSpec


def _png(paper: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(paper).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _archive(rng, alphabets: dict[str, list[int]], root: str = "images_evaluation") -> tuple[bytes, list]:
    """A zip laid out like the publisher's, members in shuffled order; returns it and the expected
    (character, drawer, alphabet, paper image) in the converted order."""
    entries = []
    for alphabet, chars in alphabets.items():
        for k, char in enumerate(chars):
            for drawer in range(1, 21):
                paper = rng.uniform(size=(105, 105)) > 0.1          # True = white paper
                entries.append((char, drawer, alphabet, f"{root}/{alphabet}/character{k + 1:02d}/{char:04d}_{drawer:02d}.png",
                                paper))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in rng.permutation(len(entries)):
            zf.writestr(entries[i][3], _png(entries[i][4]))
    return buf.getvalue(), sorted(entries, key=lambda e: (e[0], e[1]))


def test_box_filter_is_the_mean_ink_of_each_patch():
    """The area filter against an independent one: upsample 4x (105 -> 420) and average 15 x 15 blocks."""
    w = box_matrix()
    np.testing.assert_allclose(w.sum(1), 1.0)
    ink = (np.random.default_rng(0).uniform(size=(5, 105, 105)) > 0.7).astype(float)
    big = ink.repeat(4, axis=1).repeat(4, axis=2)
    want = np.rint(255 * big.reshape(5, 28, 15, 28, 15).mean(axis=(2, 4))).astype(np.uint8)
    np.testing.assert_array_equal(downsample(ink), want)


def test_archive_order_labels_and_ink():
    rng = np.random.default_rng(1)
    data, expected = _archive(rng, {"Zeta": [1203, 1204], "Alpha": [965]})
    images, labels = read_archive(data)
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    # by character number, then drawer; alphabets labelled in the order of their character numbers
    assert labels.tolist() == [0] * 20 + [1] * 40
    np.testing.assert_array_equal(images, downsample(~np.stack([e[4] for e in expected])))
    assert images.mean() < 60            # white ink (10 % of the pixels) on black


def test_payload_digest_accepts_any_compression_of_the_same_contents(tmp_path):
    payload = b"\x00\x00\x08\x01" + bytes(range(200))
    spec = FileSpec("x.gz", ("0" * 64,), payload_sha256=(hashlib.sha256(payload).hexdigest(),))
    for level in (1, 9):
        (tmp_path / "x.gz").write_bytes(gzip.compress(payload, compresslevel=level))
        assert file_verifies(tmp_path / "x.gz", spec)
    (tmp_path / "x.gz").write_bytes(gzip.compress(payload[:-1] + b"\x01"))
    assert not file_verifies(tmp_path / "x.gz", spec)
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    assert not file_verifies(tmp_path / "x.gz", spec)


def test_committed_files_verify_by_their_contents():
    """The shipped digests of the contents are those of the checked files (recompressing them still verifies)."""
    src = SOURCES["omniglot"]
    for split in src.splits.values():
        for spec in split:
            assert spec.payload_sha256 and spec.urls[0].startswith("https://raw.githubusercontent.com/brendenlake/")


def _fake_source(monkeypatch, archives: dict[str, bytes], tmp_path):
    """Omniglot's source with digests of what converting ``archives`` gives (made by the code under test
    only for the digests; the download then has to reproduce them)."""
    src = SOURCES["omniglot"]
    splits = {}
    for split, (img_spec, lab_spec) in src.splits.items():
        images, labels = read_archive(archives[split])
        head = lambda arr: bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.tobytes()  # noqa: E731
        splits[split] = (replace(img_spec, sha256=(), payload_sha256=(hashlib.sha256(head(images)).hexdigest(),)),
                         replace(lab_spec, sha256=(), payload_sha256=(hashlib.sha256(head(labels)).hexdigest(),)))
    monkeypatch.setitem(SOURCES, "omniglot", replace(src, splits=splits))


def test_download_converts_and_verifies(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    archives = {"test": _archive(rng, {"A": [965, 966]})[0], "train": _archive(rng, {"B": [1], "C": [2]}, "images_background")[0]}
    _fake_source(monkeypatch, archives, tmp_path)
    for split, name in (("test", "images_evaluation.zip"), ("train", "images_background.zip")):
        server.files[f"/omniglot/{name}"] = archives[split]
        server.plans[f"/omniglot/{name}"] = ["drop", "ok"]            # resumes the archive too
    dest = dl.download("omniglot", tmp_path / "o", mirror=server.url, backoff=0.0, log=lambda _m: None)
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(
        s.name for split in SOURCES["omniglot"].splits.values() for s in split)       # archives removed
    np.testing.assert_array_equal(read_idx(dest / "t10k-images-idx3-ubyte.gz"), read_archive(archives["test"])[0])
    assert read_idx(dest / "train-labels-idx1-ubyte.gz").tolist() == [0] * 20 + [1] * 20


def test_a_changed_archive_writes_nothing(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    archives = {"test": _archive(rng, {"A": [965]})[0], "train": _archive(rng, {"B": [1]}, "images_background")[0]}
    _fake_source(monkeypatch, archives, tmp_path)
    other = _archive(np.random.default_rng(4), {"A": [965]})[0]           # same layout, other images
    server.files["/omniglot/images_evaluation.zip"] = other
    server.plans["/omniglot/images_evaluation.zip"] = ["ok"]
    with pytest.raises(dl.DownloadError, match="do not match the known digests"):
        dl.download("omniglot", tmp_path / "o", mirror=server.url, backoff=0.0, log=lambda _m: None)
    assert not any(p.suffix in (".gz", ".zip", ".part", ".tmp") for p in (tmp_path / "o").iterdir())
    server.files["/omniglot/images_evaluation.zip"] = b"not a zip" * 30
    with pytest.raises(dl.DataError, match="not a zip"):
        dl.download("omniglot", tmp_path / "o", mirror=server.url, backoff=0.0, log=lambda _m: None)
