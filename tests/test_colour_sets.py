"""CIFAR-10 and SVHN for users with internet: `oodgen data download` against a loopback HTTP
server with small fake files (their digests replace the real ones), reading the CIFAR archive in
place and SVHN's .mat files, and a smoke `oodgen run --id cifar10` with SVHN as its OOD set."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest

from oodgen.cli import main as cli
from oodgen.data import DataError, download as dl, load
from oodgen.data.sources import SOURCES, FileSpec


def _cifar_archive(n_train=60, n_test=100, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}.bin", n_train) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
            labels = rng.integers(0, 10, n).astype(np.uint8)
            pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
            pixels[:, :1024] = (labels[:, None] * 25).astype(np.uint8)      # a class signal in the red plane
            data = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _svhn_mat(n=80, seed=1) -> bytes:
    from scipy.io import savemat
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    savemat(buf, {"X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                  "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
    return buf.getvalue()


@pytest.fixture
def fake_colour_sets(monkeypatch, server):
    cifar, svhn = _cifar_archive(), _svhn_mat()
    spec_c = FileSpec("cifar-10-binary.tar.gz", (hashlib.sha256(cifar).hexdigest(),), (server.url + "/c.tgz",))
    spec_s = FileSpec("test_32x32.mat", (), (server.url + "/s.mat",), (hashlib.md5(svhn).hexdigest(),))
    monkeypatch.setitem(SOURCES, "cifar10", replace(SOURCES["cifar10"], splits={"train": (spec_c, spec_c),
                                                                                "test": (spec_c, spec_c)}))
    monkeypatch.setitem(SOURCES, "svhn", replace(SOURCES["svhn"], splits={"test": (spec_s, spec_s)}))
    server.files.update({"/c.tgz": cifar, "/s.mat": svhn})
    server.plans.update({"/c.tgz": ["ok"], "/s.mat": ["ok"]})
    return cifar, svhn


def test_download_and_read(fake_colour_sets, tmp_path):
    dl.download("cifar10", tmp_path / "cifar10", log=lambda *_: None)
    dl.download("svhn", tmp_path / "svhn", log=lambda *_: None)
    tr, te = load("cifar10", "train", tmp_path), load("cifar10", "test", tmp_path)
    assert tr.images.shape == (300, 3, 32, 32) and te.images.shape == (100, 3, 32, 32)
    assert tr.images.dtype == np.float32 and set(np.unique(tr.labels)) <= set(range(10))
    np.testing.assert_allclose(tr.images[:, 0].mean((1, 2)), tr.labels * 25 / 255, atol=1e-6)
    s = load("svhn", "test", tmp_path)
    assert s.images.shape == (80, 3, 32, 32) and s.labels.min() >= 0 and s.labels.max() <= 9
    # a corrupted archive is refused by its checksum
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b" + b"0" * 100)
    with pytest.raises(DataError, match="checksum"):
        load("cifar10", "train", tmp_path)


def test_cifar10_smoke_run_with_svhn(fake_colour_sets, tmp_path):
    dl.download("cifar10", tmp_path / "cifar10", log=lambda *_: None)
    dl.download("svhn", tmp_path / "svhn", log=lambda *_: None)
    out = tmp_path / "run"
    assert cli(["run", "--id", "cifar10", "--profile", "smoke", "--out", str(out), "--data-dir", str(tmp_path),
                "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["ood"]) == {"svhn", "gaussian", "uniform", "sphere"}
    assert m["cvae_health"]["latent_dim"] == 8


def test_svhn_reader_refuses_a_non_mat_file(tmp_path):
    from oodgen.data.datasets import _read_svhn
    bad = tmp_path / "test_32x32.mat"
    bad.write_bytes(b"this is not a MATLAB file" * 10)
    with pytest.raises(DataError, match="cannot read SVHN"):
        _read_svhn(bad)


def _mat73(path, variables: dict) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 behind a 512-byte user block that starts with
    the 128-byte MAT header (version 0x0200), every array stored with its dimensions reversed."""
    import h5py
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            f[name] = np.ascontiguousarray(arr.transpose())
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 00:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(head.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")


def test_svhn_reader_reads_matlab_v73_files(tmp_path, monkeypatch):
    """SVHN saved as MATLAB v7.3 (HDF5) reads like the published v5 file; without h5py the error
    says what to install."""
    pytest.importorskip("h5py")         # in the test extra; a user without it gets the message below
    from oodgen.data.datasets import _read_svhn
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 7)).astype(np.uint8)
    y = rng.integers(1, 11, (7, 1)).astype(np.uint8)
    v5, v73 = tmp_path / "v5.mat", tmp_path / "v73.mat"
    from scipy.io import savemat
    savemat(v5, {"X": x, "y": y})
    _mat73(v73, {"X": x, "y": y})
    want, got = _read_svhn(v5), _read_svhn(v73)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].shape == (7, 3, 32, 32) and set(got[1]) <= set(range(10))
    # the version field decides, as in scipy: a v7.3 file whose header text is another writer's reads too
    other = tmp_path / "v73-other-text.mat"
    other.write_bytes(b"Written by another tool, v7.3 HDF5".ljust(40, b" ") + v73.read_bytes()[40:])
    np.testing.assert_array_equal(_read_svhn(other)[0], want[0])
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "h5py" else real_import(name, *a, **k))
    with pytest.raises(DataError, match=r"MATLAB v7.3 \(HDF5\) file; reading it needs h5py"):
        _read_svhn(v73)
    monkeypatch.setattr(builtins, "__import__", real_import)
    # scipy's NotImplementedError on a file that is not v7.3 is not taken for one: a plain error
    import scipy.io
    monkeypatch.setattr(scipy.io, "loadmat", lambda *_a, **_k: (_ for _ in ()).throw(NotImplementedError("x")))
    with pytest.raises(DataError, match=r"cannot read SVHN's \.mat file \(NotImplementedError"):
        _read_svhn(v5)
    monkeypatch.undo()
    _mat73(v73, {"X": x})                          # a v7.3 file without y: named, not a traceback
    with pytest.raises(DataError, match="MATLAB v7.3 file"):
        _read_svhn(v73)
