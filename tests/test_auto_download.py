"""A built-in dataset missing from the search path is downloaded where it is resolved (so ``oodgen run``,
``bench`` and ``select`` fetch what they need), unless offline or turned off; no real network here:
a stand-in downloader, or a local HTTP server as a mirror."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from oodgen import data as D
from oodgen.data import download as dl
from oodgen.data.sources import SOURCES, FileSpec

IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
FOLDER = "notmnist-auto-download-test"      # on no real search path folder


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(header + arr.tobytes())
    return buf.getvalue()


@pytest.fixture
def fake_notmnist(monkeypatch, tmp_path):
    """notMNIST as 7 known images in a folder name nothing else uses; downloads allowed; a writable
    OODGEN_DATA folder first on the search path, so that nothing is written outside ``tmp_path``."""
    images = np.arange(7 * 28 * 28, dtype=np.uint64).reshape(7, 28, 28).astype(np.uint8)
    files = {IMAGES: _idx(images), LABELS: _idx(np.arange(7, dtype=np.uint8))}
    specs = tuple(FileSpec(n, (hashlib.sha256(b).hexdigest(),), (f"https://publisher.invalid/{n}",))
                  for n, b in files.items())
    monkeypatch.setitem(SOURCES, "notmnist", replace(SOURCES["notmnist"], folders=(FOLDER,), splits={"test": specs}))
    monkeypatch.delenv(D.datasets.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("OODGEN_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return images, files


@pytest.fixture
def downloader(monkeypatch, fake_notmnist):
    """Stand-ins for the network: the server answers; download() writes the files and records its call."""
    calls = []

    def fake_download(name, dest, *, log=print, **_kw):
        calls.append((name, dest))
        time.sleep(0.05)                   # long enough for a second process to find it missing too
        for fname, blob in fake_notmnist[1].items():
            (dest / fname).write_bytes(blob)
        return dest

    monkeypatch.setattr(dl, "unreachable", lambda url: None)
    monkeypatch.setattr(dl, "download", fake_download)
    return calls


def test_missing_and_reachable_downloads_into_the_first_writable_folder_and_loads(tmp_path, monkeypatch,
                                                                                   fake_notmnist, downloader):
    read_only, writable = tmp_path / "read-only", tmp_path / "writable"
    read_only.mkdir(mode=0o555)
    writable.mkdir()
    # folders that do not exist or are marked read-only (even for root) are passed over
    monkeypatch.setenv("OODGEN_DATA", os.pathsep.join(map(str, (tmp_path / "absent", read_only, writable))))
    s = D.load("notmnist", "test")
    assert downloader == [("notmnist", writable / FOLDER)]
    assert np.array_equal(s.images[:, 0], fake_notmnist[0] / np.float32(255)) and list(s.labels) == list(range(7))
    D.load("notmnist", "test")
    assert len(downloader) == 1                                  # found there the second time


def test_a_data_dir_that_does_not_exist_yet_is_created(tmp_path, downloader):
    img, lbl = D.resolve("notmnist", "test", data_dir=tmp_path / "new", log=lambda _m: None)
    assert img == tmp_path / "new" / FOLDER / IMAGES and downloader == [("notmnist", tmp_path / "new" / FOLDER)]


def test_missing_and_unreachable_keeps_the_clear_message(tmp_path, monkeypatch, fake_notmnist):
    monkeypatch.setattr(dl, "unreachable", lambda url: "cannot reach publisher.invalid (Name or service not known)")
    monkeypatch.setattr(dl, "download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("notmnist", "test", data_dir=tmp_path / "here")
    msg = str(err.value)
    assert "dataset 'notmnist' (test split) not found. Looked for" in msg and str(tmp_path / "here") in msg
    assert "How to get it: `oodgen data download notmnist`" in msg
    assert msg.endswith("Not downloaded automatically: cannot reach publisher.invalid (Name or service not known).")


def test_turned_off_by_environment_or_argument(tmp_path, monkeypatch, downloader):
    monkeypatch.setattr(dl, "unreachable", lambda url: pytest.fail("probed the network while turned off"))
    monkeypatch.setenv(D.datasets.NO_DOWNLOAD_ENV, "1")
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("notmnist", "test")
    assert str(err.value).endswith(f"holding one of {[FOLDER]!r}.")           # the message as it always was
    monkeypatch.delenv(D.datasets.NO_DOWNLOAD_ENV)
    with pytest.raises(D.DatasetNotFoundError):
        D.load("notmnist", "test", download=False)
    assert downloader == []
    monkeypatch.setattr(dl, "unreachable", lambda url: None)
    monkeypatch.setenv(D.datasets.NO_DOWNLOAD_ENV, "1")
    assert len(D.load("notmnist", "test", download=True)) == 7               # the argument wins
    assert [d.name for _n, d in downloader] == [FOLDER]


def test_a_dataset_without_a_download_url_is_not_fetched(monkeypatch, fake_notmnist, downloader):
    monkeypatch.setitem(SOURCES, "notmnist", replace(SOURCES["notmnist"], splits={"test": tuple(
        replace(spec, urls=()) for spec in SOURCES["notmnist"].splits["test"])}))
    with pytest.raises(D.DatasetNotFoundError, match="How to get it"):
        D.load("notmnist", "test")
    assert downloader == [] and dl.first_url("notmnist") is None
    assert dl.first_url("omniglot").endswith("/images_evaluation.zip")        # converted from its zips


def test_processes_that_find_it_missing_at_once_download_it_once(monkeypatch, downloader):
    errors = []

    def load():
        try:
            D.load("notmnist", "test")
        except Exception as exc:       # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(downloader) == 1


def test_end_to_end_through_a_mirror(server, tmp_path, monkeypatch, fake_notmnist):
    """The real downloader and reachability probe against a local server named by $OODGEN_MIRROR."""
    for name, blob in fake_notmnist[1].items():
        server.files[f"/notmnist/{name}"] = blob
        server.plans[f"/notmnist/{name}"] = ["ok"]
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    s = D.load("notmnist", "test", data_dir=tmp_path / "data")
    assert len(s) == 7 and (tmp_path / "data" / FOLDER / IMAGES).read_bytes() == fake_notmnist[1][IMAGES]


def test_unreachable_names_the_host_and_first_url_follows_the_mirror():
    with socket.socket() as sock:              # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "cannot reach 127.0.0.1" in dl.unreachable(f"http://127.0.0.1:{port}/x", timeout=2)
    assert dl.first_url("mnist", mirror="http://m.example/") == "http://m.example/mnist/train-images-idx3-ubyte.gz"
    assert dl.first_url("mnist").startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert dl.first_url("emnist-letters", mirror="http://m").endswith("/emnist-letters/gzip.zip")
