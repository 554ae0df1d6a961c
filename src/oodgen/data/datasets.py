"""Datasets by name: real image sets found on a search path, class subsets, synthetic OOD sets.

Search path, in order (the first folder that holds a dataset's files wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line),
2. every folder in the environment variable ``OODGEN_DATA`` (``os.pathsep``-separated),
3. ``../shared/datasets`` next to the current directory and next to the source checkout,
4. ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` installs there),
5. ``~/.cache/oodgen`` (where ``oodgen data download`` writes).

All images are returned as float32 tensors of shape (N, 1, 28, 28) in [0, 1]; labels are int64.
Every file is checked against its known SHA-256 before it is read.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .idx import IDXError, read_idx
from .sources import SOURCES, FileSpec, Source


class DataError(ValueError):
    """A dataset is missing, corrupt, or its name is unknown."""


REAL_SETS = tuple(SOURCES)
SYNTHETIC_SETS = ("gaussian", "gaussian-unclipped", "uniform", "sphere")
SUBSETS = {"mnist0-4": ("mnist", range(0, 5)), "mnist5-9": ("mnist", range(5, 10)),
           "fmnist0-4": ("fmnist", range(0, 5)), "fmnist5-9": ("fmnist", range(5, 10))}
ALL_SETS = REAL_SETS + tuple(SUBSETS) + SYNTHETIC_SETS

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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_verifies(path: Path, spec: FileSpec) -> bool:
    """True if the file's SHA-256 (or, for publisher copies, MD5) is a known digest."""
    if sha256_file(path) in spec.sha256:
        return True
    return bool(spec.md5) and md5_file(path) in spec.md5


_verified: dict[tuple[str, int, float], bool] = {}


def _check(path: Path, spec: FileSpec) -> None:
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
    source = _source(name)
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
    raise DataError(
        f"dataset {name!r} ({split} split) not found. Looked for {img_spec.name} in:\n  "
        + "\n  ".join(looked)
        + f"\nHow to get it: {source.how_to_get}; or point --data-dir / OODGEN_DATA at a folder "
        f"holding one of {list(source.folders)}."
    )


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(ALL_SETS)}")
    return SOURCES[name]


def load_real(name: str, split: str = "test", data_dir: str | os.PathLike | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Load a verified real dataset split as (uint8 images (N, 28, 28) or (N, C, H, W), int64 labels)."""
    source = _source(name)
    img_path, lbl_path = locate(name, split, data_dir)
    img_spec, lbl_spec = source.splits[split]
    _check(img_path, img_spec)
    if source.format == "cifar-binary":
        return _read_cifar(img_path, split)
    if source.format == "svhn-mat":
        return _read_svhn(img_path)
    _check(lbl_path, lbl_spec)
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
    """Whether a dataset's test files can be found (synthetic sets always can)."""
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
         shape: tuple[int, int, int] = (1, 28, 28)) -> ImageSet:
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
    """
    if name in SYNTHETIC_SETS:
        return ImageSet(name, synthetic(name, n or DEFAULT_SYNTHETIC_SIZE, seed, sphere_radius, shape),
                        np.full(n or DEFAULT_SYNTHETIC_SIZE, -1, np.int64))
    if name in SUBSETS:
        base, classes = SUBSETS[name]
        images, labels = load_real(base, split, data_dir)
        keep = np.isin(labels, list(classes))
        images, labels = images[keep], labels[keep] - min(classes)
    elif name in SOURCES:
        images, labels = load_real(name, split, data_dir)
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
