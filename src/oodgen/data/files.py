"""Where a real dataset's files are found on disk, and whether they verify.

Search path, in order (the first folder that holds a dataset's files wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line),
2. every folder in the environment variable ``OODGEN_DATA`` (``os.pathsep``-separated),
3. ``../shared/datasets`` next to the current directory and next to the source checkout,
4. ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` installs there),
5. ``~/.cache/oodgen`` (where ``oodgen data download`` writes).

Every file is checked against its known SHA-256 (or, for publisher copies, MD5) before it is read.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .sources import ALL_SETS, SOURCES, FileSpec, Source


class DataError(ValueError):
    """A dataset is missing, corrupt, or its name is unknown."""


class DatasetNotFoundError(DataError):
    """A real dataset's files are in no folder of the search path."""


def search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset files, in order."""
    paths: list[Path] = []
    if data_dir:
        paths.append(Path(data_dir))
    for entry in os.environ.get("OODGEN_DATA", "").split(os.pathsep):
        if entry:
            paths.append(Path(entry))
    paths.append(Path.cwd().parent / "shared" / "datasets")
    checkout = Path(__file__).resolve().parents[3]
    paths.append(checkout.parent / "shared" / "datasets")
    paths.append(Path("/usr/share/datasets"))
    paths.append(cache_dir())
    seen, unique = set(), []
    for p in paths:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def cache_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/oodgen`` or ``~/.cache/oodgen``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oodgen"


def _hex_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return _hex_digest(path, "sha256")


def md5_file(path: Path) -> str:
    return _hex_digest(path, "md5")


def file_verifies(path: Path, spec: FileSpec) -> bool:
    """True if the file's SHA-256 (or, for publisher copies, MD5) is a known digest, or, for a file converted
    here (Omniglot), the SHA-256 of its decompressed contents is."""
    if sha256_file(path) in spec.sha256:
        return True
    if spec.md5 and md5_file(path) in spec.md5:
        return True
    return bool(spec.payload_sha256) and _payload_sha256(path) in spec.payload_sha256


def _payload_sha256(path: Path) -> str | None:
    import gzip
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError):
        return None
    return h.hexdigest()


_verified: dict[tuple[str, int, float], bool] = {}


def check_file(path: Path, spec: FileSpec) -> None:
    """Raise :class:`DataError` unless ``path`` has a known digest of ``spec`` (memoised per file version)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _verified:
        _verified[key] = file_verifies(path, spec)
    if not _verified[key]:
        raise DataError(
            f"{path}: checksum mismatch (SHA-256 {sha256_file(path)} is not a known digest of "
            f"{spec.name}); the file is corrupt or a different release - delete it and fetch it again"
        )


def locate(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Find the (images, labels) files of a real dataset split on the search path."""
    source = real_source(name)
    if split not in source.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; it has {sorted(source.splits)}")
    img_spec, lbl_spec = source.splits[split]
    looked: list[str] = []
    for root in search_path(data_dir):
        for folder in source.folders:
            d = root / folder
            looked.append(str(d))
            img, lbl = d / img_spec.name, d / lbl_spec.name
            if img.is_file() and lbl.is_file():
                return img, lbl
    raise DatasetNotFoundError(
        f"dataset {name!r} ({split} split) not found. Looked for {img_spec.name} in:\n  "
        + "\n  ".join(looked)
        + f"\nHow to get it: {source.how_to_get}; or point --data-dir / OODGEN_DATA at a folder "
        f"holding one of {list(source.folders)}."
    )


def real_source(name: str) -> Source:
    """The :class:`Source` of a real dataset, or :class:`DataError` for any other name."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(ALL_SETS)}")
    return SOURCES[name]
