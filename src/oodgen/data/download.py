"""``oodgen data download NAME`` and ``oodgen data list``: fetch datasets from their publishers.

Every file is fetched with :mod:`urllib` from the URLs in :data:`oodgen.data.sources.SOURCES`
and checked against its known SHA-256 (or, for the publisher's Fashion-MNIST files, MD5)
before it gets its final name:

* bytes go to ``NAME.part`` in the destination folder; only a verified ``.part`` is renamed
  (``os.replace``, atomic) to ``NAME``, so a failed or interrupted download never leaves a
  half-written file under the final name;
* an interrupted download is resumed from its ``.part`` with an HTTP ``Range`` request when
  the server honours it (206), else restarted from zero;
* network errors and server errors (5xx) are retried a few times with exponential backoff;
  a checksum mismatch deletes the ``.part`` (after one retry from scratch if it was resumed).

EMNIST-letters is only published inside NIST's ``gzip.zip`` (about 560 MB); the archive is
downloaded the same way (as ``gzip.zip.part``), the two letters-test files are extracted from
it, verified, and the archive is deleted.

Mirrors: ``mirror=URL`` (``--mirror``, or the environment variable ``OODGEN_MIRROR``) replaces
every publisher URL by ``URL/<dataset>/<file name>`` (``URL/emnist-letters/gzip.zip`` for the
archive), e.g. a local copy served with ``python -m http.server``.

:func:`oodgen.data.datasets.resolve` calls :func:`download` by itself for a dataset missing from the
search path (after :func:`unreachable` found its server answering, under :func:`exclusive`), so a run
fetches what it needs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .files import DataError, cache_dir, file_verifies, locate, search_path
from .sources import ALL_SETS, EMNIST_ARCHIVE_URL, SOURCES, SUBSETS, SYNTHETIC_SETS, FileSpec, Source

MIRROR_ENV = "OODGEN_MIRROR"
CHUNK = 1 << 16
USER_AGENT = "oodgen-download/1 (+urllib)"


class DownloadError(DataError):
    """A download failed (network, server, or checksum); no final file was written."""


class _Retryable(Exception):
    """A transient failure: the attempt may be repeated (and resumed)."""


def default_dest(name: str) -> Path:
    """Where ``oodgen data download NAME`` writes: ``cache_dir()/<first folder name>``."""
    return cache_dir() / _source(name).folders[0]


def _source(name: str) -> Source:
    if name in SYNTHETIC_SETS:
        raise DataError(f"{name!r} is a synthetic set: it is generated from a seed, not downloaded")
    if name in SUBSETS:
        base = SUBSETS[name][0]
        raise DataError(f"{name!r} is a class subset of {base!r}: run `oodgen data download {base}`")
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(ALL_SETS)}")
    return SOURCES[name]


def _files(source: Source) -> list[FileSpec]:
    specs = [s for split in source.splits.values() for s in split] + list(source.extra)
    seen, unique = set(), []
    for s in specs:
        if s.name not in seen:
            seen.add(s.name)
            unique.append(s)
    return unique


def _mirror(mirror: str | None) -> str | None:
    m = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    return m.rstrip("/") if m else None


def _urls(source: Source, spec_urls: tuple[str, ...], mirror: str | None) -> list[str]:
    if mirror:
        names = dict.fromkeys(Path(urlsplit(u).path).name for u in spec_urls)
        return [f"{mirror}/{source.name}/{n}" for n in names]
    return list(spec_urls)


def download(name: str, dest: str | os.PathLike | None = None, *, mirror: str | None = None,
             retries: int = 3, backoff: float = 1.0, timeout: float = 60.0,
             log: Callable[[str], None] = print) -> Path:
    """Download and verify every file of dataset ``name`` into ``dest``; return ``dest``.

    Parameters
    ----------
    name : a real dataset of :data:`SOURCES` (``mnist``, ``fmnist``, ``notmnist``, ``kmnist``, ``omniglot``,
        ``emnist-letters``).
    dest : destination folder; default :func:`default_dest` (``~/.cache/oodgen/<folder>``),
        which is on the dataset search path.
    mirror : base URL replacing the publishers' (default: ``$OODGEN_MIRROR``, else none).
    retries : extra attempts per file after a transient failure.
    backoff : seconds before the first retry; doubled after each.
    timeout : socket timeout per request, seconds.

    Raises
    ------
    DataError
        For a synthetic, subset or unknown name, or a dataset with no download URL.
    DownloadError
        If a file cannot be fetched or does not verify; files already verified stay.
    """
    source = _source(name)
    dest = Path(dest) if dest is not None else default_dest(name)
    mirror = _mirror(mirror)
    specs = _files(source)
    todo = []
    for spec in specs:
        final = dest / spec.name
        if final.is_file():
            if file_verifies(final, spec):
                log(f"{final}: present, checksum ok")
                continue
            log(f"{final}: checksum mismatch; fetching it again")
        todo.append(spec)
    if not todo:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if name == "emnist-letters":
        _download_emnist(source, todo, dest, mirror, retries, backoff, timeout, log)
        return dest
    if name == "omniglot":
        _download_omniglot(source, todo, dest, mirror, retries, backoff, timeout, log)
        return dest
    for spec in todo:
        urls = _urls(source, spec.urls, mirror)
        if not urls:
            raise DataError(f"dataset {name!r} has no download URL for {spec.name}; {source.how_to_get}")
        fetch_verified(urls, dest / spec.name, lambda p, s=spec: file_verifies(p, s),
                       retries=retries, backoff=backoff, timeout=timeout, log=log)
    return dest


def first_url(name: str, mirror: str | None = None) -> str | None:
    """The first URL :func:`download` would fetch for ``name`` (with the mirror applied), or None when
    the dataset has no download URL."""
    source = _source(name)
    mirror = _mirror(mirror)
    if name == "emnist-letters":
        return _urls(source, (EMNIST_ARCHIVE_URL,), mirror)[0]
    specs = _files(source)
    if not all(spec.urls for spec in specs):
        return None
    return _urls(source, specs[0].urls, mirror)[0]


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """None when the server of ``url`` answers (any HTTP status; proxies as for a download), else why not."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        urllib.request.urlopen(req, timeout=timeout).close()
    except urllib.error.HTTPError as exc:          # an answer, if not a welcome one: the network works
        exc.close()
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        return f"cannot reach {urlsplit(url).netloc} ({getattr(exc, 'reason', None) or exc})"
    return None


@contextlib.contextmanager
def exclusive(dest: Path):
    """Hold an exclusive lock on ``dest/.oodgen-download.lock`` (``flock``; no lock where the platform
    has none), so that processes which find one dataset missing at once download it once."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:                            # not POSIX
        yield
        return
    with open(dest / ".oodgen-download.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_verified(urls: list[str], final: Path, verify: Callable[[Path], bool] | None, *,
                   retries: int = 3, backoff: float = 1.0, timeout: float = 60.0,
                   log: Callable[[str], None] = print) -> Path:
    """Fetch the first URL that works into ``final`` via ``final.part``, resuming, retrying,
    verifying; only a verified file is renamed to ``final``.

    ``verify=None`` accepts any complete download (the EMNIST archive, whose members are
    verified instead); the ``.part`` is then returned without being renamed.
    """
    part = final.with_name(final.name + ".part")
    errors = []
    for url in urls:
        restarted = False
        attempt = 0
        while True:
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _fetch_into(url, part, timeout, log)
            except _Retryable as exc:
                attempt += 1
                if attempt > retries:
                    errors.append(f"{url}: {exc} (gave up after {retries + 1} attempts)")
                    break
                wait = backoff * 2 ** (attempt - 1)
                log(f"{url}: {exc}; retry {attempt}/{retries} in {wait:.3g} s")
                time.sleep(wait)
                continue
            except DownloadError as exc:       # permanent (HTTP 4xx): next URL
                errors.append(str(exc))
                break
            if verify is None:
                return part
            if verify(part):
                _fsync(part)
                os.replace(part, final)
                log(f"{final}: downloaded, checksum ok")
                return final
            part.unlink()
            if resumed and not restarted:
                # The server may have changed the file under a resumed download: start over once.
                log(f"{final.name}: checksum mismatch after resuming; downloading again from the start")
                restarted = True
                continue
            errors.append(f"{url}: checksum mismatch (not a known digest of {final.name})")
            break
    raise DownloadError(f"could not download {final.name}: " + "; ".join(errors)
                        + f". Nothing was written to {final}" + (
                            f" (partial data kept in {part.name} for resuming)" if part.exists() else ""))


def _fetch_into(url: str, part: Path, timeout: float, log: Callable[[str], None]) -> None:
    """One attempt: append to ``part`` from its current size (Range), or rewrite it."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Nothing left past our offset: the .part is complete (or too long; the checksum decides).
            exc.close()
            return
        exc.close()
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retryable(f"cannot connect ({reason})") from None
    with resp:
        status = resp.status
        if have and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                # Appending at the wrong offset would corrupt the file: start over.
                part.unlink()
                raise _Retryable(f"server answered the Range request at byte {start}, not {have}")
            mode = "ab"
            log(f"{url}: resuming at byte {have}")
        else:
            mode, have = "wb", 0               # server ignored Range (200): start over
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        written = 0
        with open(part, mode) as fh:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (OSError, HTTPException) as exc:
                    raise _Retryable(f"connection lost after {have + written} bytes ({exc})") from None
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as exc:
                    raise DownloadError(f"cannot write {part}: {exc}") from None
                written += len(block)
    # urllib returns b"" on a connection closed early instead of raising: count the bytes.
    if expected is not None and written < expected:
        raise _Retryable(f"connection lost after {have + written} of {have + expected} bytes")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _download_emnist(source: Source, todo: list[FileSpec], dest: Path, mirror: str | None,
                     retries: int, backoff: float, timeout: float, log: Callable[[str], None]) -> None:
    log(f"EMNIST is published only inside {EMNIST_ARCHIVE_URL} (about 560 MB); fetching it to extract "
        f"{', '.join(s.name for s in todo)}")
    urls = _urls(source, (EMNIST_ARCHIVE_URL,), mirror)
    archive = fetch_verified(urls, dest / Path(urlsplit(EMNIST_ARCHIVE_URL).path).name, None,
                             retries=retries, backoff=backoff, timeout=timeout, log=log)
    try:
        extract_verified(archive, todo, dest)
    except DownloadError:
        archive.unlink(missing_ok=True)        # a bad archive must not be resumed next time
        raise
    archive.unlink(missing_ok=True)
    for spec in todo:
        log(f"{dest / spec.name}: extracted, checksum ok")


def _download_omniglot(source: Source, todo: list[FileSpec], dest: Path, mirror: str | None,
                       retries: int, backoff: float, timeout: float, log: Callable[[str], None]) -> None:
    """Omniglot's publisher ships PNG zips: each split's zip is fetched, converted to MNIST format
    (:mod:`oodgen.data.omniglot`) and kept only when the converted contents match the known digests."""
    from .omniglot import convert
    for split, (images, labels) in source.splits.items():
        if images not in todo and labels not in todo:
            continue
        archive_url = images.urls[0]
        log(f"Omniglot ({split}) is published as PNG images in {archive_url}; converting them to MNIST format")
        archive = fetch_verified(_urls(source, (archive_url,), mirror), dest / Path(urlsplit(archive_url).path).name,
                                 None, retries=retries, backoff=backoff, timeout=timeout, log=log)
        tmp = [dest / f".tmp-{spec.name}" for spec in (images, labels)]      # .gz: written compressed
        try:
            convert(archive, tmp[0], tmp[1])
            bad = [spec.name for spec, t in zip((images, labels), tmp) if not file_verifies(t, spec)]
            if bad:
                raise DownloadError(f"{archive.name}: the converted {', '.join(bad)} do not match the known "
                                    "digests (a changed archive?); nothing was written")
            for spec, t in zip((images, labels), tmp):
                os.replace(t, dest / spec.name)
                log(f"{dest / spec.name}: converted, checksum of its contents ok")
        except DataError:
            archive.unlink(missing_ok=True)        # a bad archive must not be resumed next time
            raise
        finally:
            for t in tmp:
                t.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)


def extract_verified(archive: Path, specs: list[FileSpec], dest: Path) -> None:
    """Extract the members of a zip whose base names are ``spec.name`` into ``dest``, each via a
    temporary file in ``dest`` that is renamed only after its checksum verified."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(m.filename).name: m for m in zf.infolist() if not m.is_dir()}
            for spec in specs:
                if spec.name not in members:
                    raise DownloadError(f"{archive.name}: archive has no member {spec.name}")
                fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{spec.name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(members[spec.name]) as src:
                        shutil.copyfileobj(src, out, CHUNK)
                        out.flush()
                        os.fsync(out.fileno())
                    if not file_verifies(Path(tmp), spec):
                        raise DownloadError(f"{archive.name}: member {spec.name} does not match its "
                                            "known checksum; nothing was written")
                    os.replace(tmp, dest / spec.name)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DownloadError(f"{archive.name}: not a valid zip archive ({exc}); delete it and retry") from None


# ----------------------------------------------------------------------------- data list

def dataset_status(data_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """One entry per dataset and split: where its files were found and whether they verify."""
    rows = []
    for name in ALL_SETS:
        if name in SYNTHETIC_SETS:
            rows.append({"name": name, "split": "-", "location": "generated (seeded)", "checksum": "-"})
            continue
        if name in SUBSETS:
            rows.append({"name": name, "split": "-", "location": f"classes of {SUBSETS[name][0]}",
                         "checksum": "-"})
            continue
        source = SOURCES[name]
        for split, (img_spec, lbl_spec) in source.splits.items():
            try:
                img, lbl = locate(name, split, data_dir)
            except DataError:
                rows.append({"name": name, "split": split, "location": "missing", "checksum": "-"})
                continue
            ok = file_verifies(img, img_spec) and file_verifies(lbl, lbl_spec)
            rows.append({"name": name, "split": split, "location": str(img.parent),
                         "checksum": "ok" if ok else "FAILED"})
    return rows


def _cmd_list(args: argparse.Namespace) -> int:
    rows = dataset_status(args.data_dir)
    w_name = max(len(r["name"]) for r in rows)
    print(f"{'dataset':<{w_name}}  split  checksum  location")
    for r in rows:
        print(f"{r['name']:<{w_name}}  {r['split']:<5}  {r['checksum']:<8}  {r['location']}")
    print("searched: " + os.pathsep.join(str(p) for p in search_path(args.data_dir)), file=sys.stderr)
    failed = [f"{r['name']} ({r['split']})" for r in rows if r["checksum"] == "FAILED"]
    if failed:
        print(f"checksum FAILED for {', '.join(failed)}: delete those files and download them again",
              file=sys.stderr)
        return 1
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    dest = download(args.name, args.dest, mirror=args.mirror)
    print(f"{args.name}: ready in {dest}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``oodgen data download`` and ``oodgen data list`` to the CLI's subparsers."""
    p = subparsers.add_parser("data", help="download datasets / list where they were found")
    sub = p.add_subparsers(dest="data_command", required=True)
    d = sub.add_parser("download", help="download and verify a dataset from its publisher",
                       description="Download a dataset, verify its checksums and store it where "
                                   "oodgen finds it (default: the user cache folder).")
    d.add_argument("name", metavar="NAME", help="mnist, fmnist, notmnist, kmnist or emnist-letters")
    d.add_argument("--dest", default=None, help="destination folder (default: ~/.cache/oodgen/<name>)")
    d.add_argument("--mirror", default=None,
                   help=f"base URL replacing the publishers' (URL/<name>/<file>; default ${MIRROR_ENV})")
    d.set_defaults(func=_cmd_download)
    ls = sub.add_parser("list", help="every dataset, where it was found, whether it verifies")
    ls.add_argument("--data-dir", default=None, help="folder searched first (as for `oodgen run`)")
    ls.set_defaults(func=_cmd_list)
    return p
