"""Datasets by name: real image sets found on a search path (:mod:`oodgen.data.files`) and
downloaded when missing, class subsets, synthetic OOD sets.

A built-in real dataset that is in no folder of the search path is downloaded from its publisher
(or ``$OODGEN_MIRROR``) and verified, as ``oodgen data download NAME`` does, into the first folder of
the search path that can be written (:func:`resolve`); so ``oodgen run``, ``oodgen bench`` and
``oodgen select`` fetch what they need. Offline, or with ``OODGEN_NO_DOWNLOAD=1`` (or
``download=False``), a missing dataset stays an error that says where it was looked for and which
command fetches it.

All images are returned as float32 tensors of shape (N, 1, 28, 28) in [0, 1]; labels are int64.
Every file is checked against its known SHA-256 before it is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import download as fetch
from .files import (DataError, DatasetNotFoundError, cache_dir, check_file, locate, real_source,
                    search_path)
from .idx import IDXError, read_idx
from .sources import ALL_SETS, SOURCES, SUBSETS, SYNTHETIC_SETS

#: The OOD sets of each in-distribution setting, as in the paper's Table 1 plus KMNIST
#: (the stand-in for EMNIST-letters while EMNIST cannot be had; EMNIST is used when present).
SETTINGS: dict[str, tuple[str, ...]] = {
    "mnist": ("fmnist", "emnist-letters", "notmnist", "omniglot", "kmnist",
              "gaussian", "uniform", "sphere"),
    "fmnist": ("mnist", "emnist-letters", "notmnist", "omniglot", "kmnist",
               "gaussian", "uniform", "sphere"),
    "mnist0-4": ("mnist5-9", "fmnist", "emnist-letters", "notmnist", "omniglot", "kmnist",
                 "gaussian", "uniform", "sphere"),
    "fmnist0-4": ("fmnist5-9", "mnist", "emnist-letters", "notmnist", "omniglot", "kmnist",
                  "gaussian", "uniform", "sphere"),
    # beyond the paper, for users with internet: 32x32x3 (nothing committed depends on it)
    "cifar10": ("svhn", "gaussian", "uniform", "sphere"),
}
#: The paper's four in-distribution settings (the results tables, the bench's ``--id all``).
PAPER_SETTINGS = ("mnist", "fmnist", "mnist0-4", "fmnist0-4")
OPTIONAL_SETS = ("emnist-letters", "svhn")
DEFAULT_SYNTHETIC_SIZE = 10_000


#: ``OODGEN_NO_DOWNLOAD=1``: a missing built-in dataset is an error (naming the command that fetches
#: it) instead of a download.  The test suite sets it: nothing downloads inside a test.
NO_DOWNLOAD_ENV = "OODGEN_NO_DOWNLOAD"


def downloads_allowed(download: bool | None = None) -> bool:
    """``download`` when given; else True unless ``$OODGEN_NO_DOWNLOAD`` is set (to anything but 0)."""
    if download is not None:
        return bool(download)
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip() in ("", "0")


def download_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`resolve` downloads a missing dataset: the first folder of the search path that
    exists and can be written; ``data_dir`` and the cache folder (``~/.cache/oodgen``) also when they
    do not exist yet but can be created."""
    creatable = {Path(data_dir), cache_dir()} if data_dir else {cache_dir()}
    for root in search_path(data_dir):
        if root.is_dir() and _writable(root):
            return root
        if not root.exists() and root in creatable and _can_create(root):
            return root
    raise DataError("no folder of the dataset search path can be written: " + os.pathsep.join(
        str(p) for p in search_path(data_dir)) + "; point --data-dir or OODGEN_DATA at one")


def _writable(folder: Path) -> bool:
    # the mode bits too: root may write anywhere, but a folder marked read-only is not meant for downloads
    return os.access(folder, os.W_OK | os.X_OK) and bool(folder.stat().st_mode & 0o222)


def _can_create(folder: Path) -> bool:
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and _writable(parent)


def resolve(name: str, split: str, data_dir: str | os.PathLike | None = None, *,
            download: bool | None = None, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """The (images, labels) files of a real dataset split: found on the search path (:func:`locate`),
    or, when missing there, downloaded and verified into ``download_dir(data_dir)/<folder>``.

    It downloads only when :func:`downloads_allowed` (``download``, else ``$OODGEN_NO_DOWNLOAD``), the
    dataset has a download URL (Omniglot: its publisher's zips, converted) and its publisher or ``$OODGEN_MIRROR`` answers;
    otherwise it raises :func:`locate`'s :class:`DatasetNotFoundError` (where it looked, which command
    fetches it), with the reason when the server could not be reached.  Processes that find the same
    dataset missing at once (torchrun ranks, Ray workers) download it once (:func:`fetch.exclusive`).
    """
    try:
        return locate(name, split, data_dir)
    except DatasetNotFoundError as missing:
        url = fetch.first_url(name) if downloads_allowed(download) else None
        if url is None:
            raise
        offline = fetch.unreachable(url)
        if offline:
            raise DatasetNotFoundError(f"{missing}\nNot downloaded automatically: {offline}.") from None
    dest = download_dir(data_dir) / SOURCES[name].folders[0]
    with fetch.exclusive(dest):
        try:                    # another process may have fetched it while this one waited
            return locate(name, split, data_dir)
        except DatasetNotFoundError:
            log(f"dataset {name!r} is not on the search path: downloading it into {dest}")
            fetch.download(name, dest, log=log)
    return locate(name, split, data_dir)


def load_real(name: str, split: str = "test", data_dir: str | os.PathLike | None = None, *,
              download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a verified real dataset split as (uint8 images (N, 28, 28) or (N, C, H, W), int64 labels);
    a missing dataset is downloaded first (:func:`resolve`)."""
    source = real_source(name)
    img_path, lbl_path = resolve(name, split, data_dir, download=download)
    img_spec, lbl_spec = source.splits[split]
    check_file(img_path, img_spec)
    if source.format == "cifar-binary":
        return _read_cifar(img_path, split)
    if source.format == "svhn-mat":
        return _read_svhn(img_path)
    check_file(lbl_path, lbl_spec)
    try:
        images = read_idx(img_path)
        labels = read_idx(lbl_path)
    except IDXError as exc:
        raise DataError(str(exc)) from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{img_path}: unexpected shapes images {images.shape}, labels {labels.shape}")
    if source.transpose:
        images = images.transpose(0, 2, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64) + source.label_offset


CIFAR_MEMBERS = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def _read_cifar(archive: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's binary records (1 label byte + 3072 pixel bytes, channel-major) straight from the
    verified archive; nothing is unpickled or extracted."""
    import tarfile
    rows = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in CIFAR_MEMBERS[split]:
                if name not in members:
                    raise DataError(f"{archive}: archive has no member {name}")
                raw = np.frombuffer(tar.extractfile(members[name]).read(), dtype=np.uint8)
                if raw.size % 3073:
                    raise DataError(f"{archive}: member {name} is not a whole number of 3073-byte records")
                rows.append(raw.reshape(-1, 3073))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot read the archive ({exc})") from None
    data = np.concatenate(rows)
    return np.ascontiguousarray(data[:, 1:].reshape(-1, 3, 32, 32)), data[:, 0].astype(np.int64)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2: X (32, 32, 3, N) uint8 and y (N, 1) with 10 for the digit 0.  MATLAB v5 files
    (as published) are read with scipy; v7.3 files (HDF5, e.g. re-saved by MATLAB) with h5py."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise DataError(f"{path}: reading SVHN's .mat files needs scipy (pip install scipy)") from None
    if _is_mat73(path):                    # the header says v7.3 (HDF5), which scipy cannot read
        x, y = _read_mat73(path, ("X", "y"))
    else:
        try:
            mat = loadmat(path)
            x, y = mat["X"], mat["y"]
        except (MatReadError, NotImplementedError, KeyError, ValueError, OSError) as exc:
            # MatReadError: not a MAT file; KeyError: no X / y; ValueError: an unknown MAT version.
            # NotImplementedError: scipy raises it only for v7.3, which _is_mat73 (scipy's own test)
            # has already sent to h5py; kept so that a future scipy whose test differs gives this
            # error, not a traceback (tests/test_colour_sets.py fakes it)
            raise DataError(f"{path}: cannot read SVHN's .mat file ({type(exc).__name__}: {exc})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.reshape(-1).shape[0] != x.shape[3]:
        raise DataError(f"{path}: unexpected shapes X {x.shape}, y {y.shape}")
    labels = y.reshape(-1).astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def _is_mat73(path: Path) -> bool:
    """True for a MATLAB v7.3 MAT file, by the test scipy itself applies before refusing one: a
    128-byte header (not v4: no zero in its first 4 bytes) whose version field (bytes 124-125, in the
    byte order named by the "IM"/"MI" mark at 126-127) has major version 2.  So every file scipy
    would refuse as v7.3 goes to h5py, whatever its descriptive text says."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError:                        # unreadable: loadmat says why
        return False
    if len(head) < 128 or 0 in head[:4]:
        return False
    major_at = 1 if head[126] == ord("I") else 0
    return head[124 + major_at] == 2


def _read_mat73(path: Path, names: tuple[str, ...]) -> list[np.ndarray]:
    """Variables ``names`` of a MATLAB v7.3 file (HDF5), in MATLAB's own dimension order."""
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path}: a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py "
                        "or 'oodgen[mat73]'), or save it again in MATLAB with -v7") from None
    try:
        with h5py.File(path, "r") as f:
            # HDF5 keeps MATLAB's column-major arrays with their dimensions reversed
            return [np.asarray(f[name]).transpose() for name in names]
    except (KeyError, OSError, TypeError, ValueError) as exc:      # no such variable, damaged HDF5, a group
        raise DataError(f"{path}: cannot read SVHN's MATLAB v7.3 file ({type(exc).__name__}: {exc})") from None


def available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether a dataset's test files can be found (synthetic sets always can); never downloads."""
    if name in SYNTHETIC_SETS:
        return True
    base = SUBSETS[name][0] if name in SUBSETS else name
    try:
        locate(base, "test", data_dir)
        return True
    except DataError:
        return False


@dataclass
class ImageSet:
    """Images in [0, 1] as float32 (N, 1, 28, 28) and int64 labels (-1 for OOD-only sets)."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def _to_float(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return x[:, None] if x.ndim == 3 else x


def load(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
         *, n: int | None = None, seed: int = 0, sphere_radius: float | None = None,
         shape: tuple[int, int, int] = (1, 28, 28), download: bool | None = None) -> ImageSet:
    """Load any dataset by name: real, class subset (``mnist0-4``) or synthetic.

    Parameters
    ----------
    name : one of :data:`ALL_SETS`.
    split : ``"train"`` or ``"test"`` for real sets.
    n : number of samples of a synthetic set (default 10,000); for real sets, keep the first n.
    seed : seed of a synthetic set.
    sphere_radius : radius of the ``sphere`` set (required for it): the paper uses the largest
        L2 norm of the in-distribution training images.
    shape : (C, H, W) of a synthetic set (it follows the in-distribution images).
    download : whether a real set missing from the search path is downloaded (:func:`resolve`);
        default: unless ``$OODGEN_NO_DOWNLOAD`` is set.
    """
    if name in SYNTHETIC_SETS:
        return ImageSet(name, synthetic(name, n or DEFAULT_SYNTHETIC_SIZE, seed, sphere_radius, shape),
                        np.full(n or DEFAULT_SYNTHETIC_SIZE, -1, np.int64))
    if name in SUBSETS:
        base, classes = SUBSETS[name]
        images, labels = load_real(base, split, data_dir, download=download)
        keep = np.isin(labels, list(classes))
        images, labels = images[keep], labels[keep] - min(classes)
    elif name in SOURCES:
        images, labels = load_real(name, split, data_dir, download=download)
    else:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(ALL_SETS)}")
    if n is not None:
        images, labels = images[:n], labels[:n]
    return ImageSet(name, _to_float(images), labels)


def synthetic(name: str, n: int = DEFAULT_SYNTHETIC_SIZE, seed: int = 0,
              sphere_radius: float | None = None, shape: tuple[int, int, int] = (1, 28, 28)) -> np.ndarray:
    """Seeded synthetic OOD images, float32 (n, *shape), default (n, 1, 28, 28).

    ``gaussian``: N(0.5, 1) per pixel clipped to [0, 1] (as ODIN's reference code);
    ``gaussian-unclipped``: the same without clipping; ``uniform``: U[0, 1];
    ``sphere``: uniform on the C*H*W-dimensional sphere centred at 0 with radius ``sphere_radius``,
    not clipped.
    """
    if n <= 0:
        raise DataError(f"synthetic set {name!r}: n must be positive, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, sum(map(ord, name))]))
    dims = int(np.prod(shape))
    shape = (n, *(int(v) for v in shape))
    if name == "gaussian":
        x = np.clip(rng.normal(0.5, 1.0, shape), 0.0, 1.0)
    elif name == "gaussian-unclipped":
        x = rng.normal(0.5, 1.0, shape)
    elif name == "uniform":
        x = rng.uniform(0.0, 1.0, shape)
    elif name == "sphere":
        if sphere_radius is None or not np.isfinite(sphere_radius) or sphere_radius <= 0:
            raise DataError("the sphere set needs a positive sphere_radius (max L2 norm of the training images)")
        g = rng.standard_normal((n, dims))
        x = (sphere_radius * g / np.linalg.norm(g, axis=1, keepdims=True)).reshape(shape)
    else:
        raise DataError(f"unknown synthetic set {name!r}; known: {', '.join(SYNTHETIC_SETS)}")
    return x.astype(np.float32)


def ood_sets(setting: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The OOD sets of an in-distribution setting that can be evaluated here.

    EMNIST-letters is skipped (with no error) when its files are absent; every other set must
    be present, else :class:`DataError` says which one is missing.
    """
    if setting not in SETTINGS:
        raise DataError(f"unknown in-distribution setting {setting!r}; known: {', '.join(SETTINGS)}")
    names = []
    for name in SETTINGS[setting]:
        if name in OPTIONAL_SETS and not available(name, data_dir):
            continue
        names.append(name)
    return names
