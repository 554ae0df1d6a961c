"""``oodgen data download`` against a real HTTP server on 127.0.0.1 (no other network)."""
from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from oodgen.data import DataError, download as dl
from oodgen.data.sources import SOURCES, FileSpec

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def fake_notmnist(monkeypatch, server):
    """notMNIST with two small fake files whose digests replace the real ones."""
    rng = np.random.default_rng(0)
    files = {IMAGES: rng.bytes(5000), LABELS: rng.bytes(300)}
    src = SOURCES["notmnist"]
    specs = tuple(FileSpec(n, (_sha(b),), (f"https://publisher.invalid/{n}",)) for n, b in files.items())
    monkeypatch.setitem(SOURCES, "notmnist", replace(src, splits={"test": specs}))
    for name, data in files.items():
        server.files[f"/notmnist/{name}"] = data
        server.plans[f"/notmnist/{name}"] = ["ok"]
    return files


def _download(server, dest, **kw):
    logs = []
    kw.setdefault("backoff", 0.0)
    path = dl.download("notmnist", dest, mirror=server.url, log=logs.append, **kw)
    return path, logs


def test_good_download_then_present(server, fake_notmnist, tmp_path):
    dest, logs = _download(server, tmp_path / "nm")
    for name, data in fake_notmnist.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == sorted(fake_notmnist)    # no .part left
    n = len(server.requests)
    _, logs = _download(server, dest)
    assert len(server.requests) == n and all("present, checksum ok" in m for m in logs)


def test_mirror_from_environment(server, fake_notmnist, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, server.url + "/")
    dl.download("notmnist", tmp_path, backoff=0.0, log=lambda _m: None)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES]


def test_default_destination_is_cache(server, fake_notmnist, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    dest = dl.download("notmnist", mirror=server.url, backoff=0.0, log=lambda _m: None)
    assert dest == tmp_path / "oodgen" / "notmnist" and (dest / LABELS).is_file()


@pytest.mark.parametrize("served", ["wrong", "truncated"])
def test_bad_file_leaves_nothing(server, fake_notmnist, tmp_path, served):
    good = fake_notmnist[IMAGES]
    server.files[f"/notmnist/{IMAGES}"] = good[::-1] if served == "wrong" else good[:1000]
    with pytest.raises(dl.DownloadError, match=f"could not download {IMAGES}: .*checksum mismatch"):
        _download(server, tmp_path)
    assert not (tmp_path / IMAGES).exists()
    assert not (tmp_path / (IMAGES + ".part")).exists()
    assert server.counts[f"/notmnist/{IMAGES}"] == 1        # a checksum mismatch is not retried


def test_dropped_connection_resumes_with_range(server, fake_notmnist, tmp_path):
    path = f"/notmnist/{IMAGES}"
    server.plans[path] = ["drop", "ok"]
    _download(server, tmp_path)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES]
    assert [r for p, r in server.requests if p == path] == [None, "bytes=2500-"]


def test_server_without_range_restarts(server, fake_notmnist, tmp_path):
    path = f"/notmnist/{IMAGES}"
    server.plans[path] = ["drop", "norange"]
    _download(server, tmp_path)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES]
    assert server.counts[path] == 2


def test_retries_with_backoff_then_give_up_and_resume_later(server, fake_notmnist, tmp_path, monkeypatch):
    path = f"/notmnist/{IMAGES}"
    server.plans[path] = ["503", "503", "drop", "drop"]
    waits = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    with pytest.raises(dl.DownloadError, match="gave up after 4 attempts") as err:
        _download(server, tmp_path, retries=3, backoff=0.5)
    assert waits == [0.5, 1.0, 2.0]
    assert "partial data kept" in str(err.value)
    assert not (tmp_path / IMAGES).exists()
    part = tmp_path / (IMAGES + ".part")
    assert part.stat().st_size == 2500 + 1250                 # two half-transfers appended
    # A later run picks the .part up.
    server.plans[path] = ["ok"]
    server.counts[path] = 0
    _download(server, tmp_path)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES] and not part.exists()
    assert (path, "bytes=3750-") in server.requests


def test_stale_part_is_discarded(server, fake_notmnist, tmp_path):
    part = tmp_path / (IMAGES + ".part")
    part.write_bytes(b"x" * 1000)           # left over from another release of the file
    _download(server, tmp_path)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES] and not part.exists()
    assert [r for p, r in server.requests if p.endswith(IMAGES)] == ["bytes=1000-", None]


def test_complete_part_is_verified(server, fake_notmnist, tmp_path):
    (tmp_path / (IMAGES + ".part")).write_bytes(fake_notmnist[IMAGES])   # killed before the rename
    _download(server, tmp_path)
    assert (tmp_path / IMAGES).read_bytes() == fake_notmnist[IMAGES]


def test_http_404_not_retried(server, fake_notmnist, tmp_path):
    server.plans[f"/notmnist/{LABELS}"] = ["404"]
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        _download(server, tmp_path, retries=3)
    assert server.counts[f"/notmnist/{LABELS}"] == 1
    assert (tmp_path / IMAGES).is_file() and not (tmp_path / LABELS).exists()


def test_connection_refused_is_retried(tmp_path, fake_notmnist, server):
    url = server.url
    server.shutdown()
    server.server_close()
    with pytest.raises(dl.DownloadError, match="cannot connect"):
        dl.download("notmnist", tmp_path, mirror=url, retries=1, backoff=0.0, timeout=2, log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, message", [
    ("gaussian", "synthetic set"), ("sphere", "synthetic set"),
    ("mnist0-4", "class subset of 'mnist'"), ("imagenet", "unknown dataset"),
])
def test_refused_names(name, message, tmp_path):
    with pytest.raises(DataError, match=message):
        dl.download(name, tmp_path, log=lambda _m: None)


# ----------------------------------------------------------------------------- EMNIST archive

def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def fake_emnist(monkeypatch):
    files = {"emnist-letters-test-images-idx3-ubyte.gz": b"images" * 100,
             "emnist-letters-test-labels-idx1-ubyte.gz": b"labels" * 10}
    src = SOURCES["emnist-letters"]
    specs = tuple(FileSpec(n, (_sha(b),)) for n, b in files.items())
    monkeypatch.setitem(SOURCES, "emnist-letters", replace(src, splits={"test": specs}))
    return files


def test_emnist_from_archive(server, fake_emnist, tmp_path):
    members = {f"gzip/{n}": b for n, b in fake_emnist.items()}
    members["gzip/emnist-digits-test-images-idx3-ubyte.gz"] = b"other"
    server.files["/emnist-letters/gzip.zip"] = _zip(members)
    server.plans["/emnist-letters/gzip.zip"] = ["drop", "ok"]     # resumes the archive too
    dest = dl.download("emnist-letters", tmp_path, mirror=server.url, backoff=0.0, log=lambda _m: None)
    assert sorted(p.name for p in dest.iterdir()) == sorted(fake_emnist)   # archive removed
    for name, data in fake_emnist.items():
        assert (dest / name).read_bytes() == data


@pytest.mark.parametrize("archive", ["bad_member", "not_zip", "missing_member"])
def test_emnist_bad_archive(server, fake_emnist, tmp_path, archive):
    images, labels = fake_emnist
    members = {f"gzip/{images}": fake_emnist[images], f"gzip/{labels}": b"tampered"}
    if archive == "missing_member":
        del members[f"gzip/{labels}"]
    data = b"not a zip" * 50 if archive == "not_zip" else _zip(members)
    server.files["/emnist-letters/gzip.zip"] = data
    server.plans["/emnist-letters/gzip.zip"] = ["ok"]
    message = {"bad_member": "does not match", "not_zip": "not a valid zip",
               "missing_member": "has no member"}[archive]
    with pytest.raises(dl.DownloadError, match=message):
        dl.download("emnist-letters", tmp_path, mirror=server.url, backoff=0.0, log=lambda _m: None)
    assert not (tmp_path / labels).exists()
    assert not any(p.name.endswith((".part", ".tmp", ".zip")) for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------- data list / CLI

def _cli(argv):
    ap = argparse.ArgumentParser(prog="oodgen")
    dl.add_parser(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args(argv)
    try:
        return a.func(a)
    except ValueError as exc:
        print(f"oodgen {a.command}: error: {exc}")
        return 2


def test_data_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OODGEN_DATA", raising=False)
    good, bad = b"good images", b"bad"
    (tmp_path / "notmnist").mkdir()
    (tmp_path / "notmnist" / IMAGES).write_bytes(good)
    (tmp_path / "notmnist" / LABELS).write_bytes(b"labels")
    src = SOURCES["notmnist"]
    monkeypatch.setitem(SOURCES, "notmnist", replace(src, splits={"test": (
        FileSpec(IMAGES, (_sha(good),)), FileSpec(LABELS, (_sha(b"labels"),)))}))
    (tmp_path / "kmnist").mkdir()
    (tmp_path / "kmnist" / IMAGES).write_bytes(bad)
    (tmp_path / "kmnist" / LABELS).write_bytes(bad)
    rows = {(r["name"], r["split"]): r for r in dl.dataset_status(tmp_path)}
    assert rows[("notmnist", "test")] == {"name": "notmnist", "split": "test",
                                          "location": str(tmp_path / "notmnist"), "checksum": "ok"}
    assert rows[("kmnist", "test")]["checksum"] == "FAILED"
    assert rows[("gaussian", "-")]["location"].startswith("generated")
    assert rows[("mnist0-4", "-")]["location"] == "classes of mnist"
    names = {r["name"] for r in rows.values()}
    from oodgen.data import ALL_SETS
    assert names == set(ALL_SETS)
    assert _cli(["data", "list", "--data-dir", str(tmp_path)]) == 1     # a checksum failed
    out = capsys.readouterr()
    assert "kmnist" in out.out and "FAILED" in out.err
    (tmp_path / "kmnist" / IMAGES).unlink()       # incomplete here: the next folder on the path wins
    rows = {(r["name"], r["split"]): r for r in dl.dataset_status(tmp_path)}
    assert rows[("kmnist", "test")]["location"] != str(tmp_path / "kmnist")


def test_data_list_reports_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("OODGEN_DATA", "")
    fake = replace(SOURCES["notmnist"], folders=("no-such-folder-anywhere",))
    monkeypatch.setitem(SOURCES, "notmnist", fake)
    rows = {(r["name"], r["split"]): r for r in dl.dataset_status(tmp_path)}
    assert rows[("notmnist", "test")]["location"] == "missing"


def test_cli_download(server, fake_notmnist, tmp_path, capsys):
    assert _cli(["data", "download", "notmnist", "--dest", str(tmp_path), "--mirror", server.url]) == 0
    assert f"ready in {tmp_path}" in capsys.readouterr().out
    assert _cli(["data", "download", "uniform"]) == 2
    assert "synthetic set" in capsys.readouterr().out
