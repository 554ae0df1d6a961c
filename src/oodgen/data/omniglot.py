"""Omniglot in MNIST format, made from its publisher's archives the way the checked files were made.

The publisher (``brendenlake/omniglot``) ships 105 x 105 one-bit PNGs in two zips, the evaluation
set (the ``test`` split here) and the background set (``train``).  The MNIST-format files this
project reads were converted from them (shared/datasets/README.md, "Omniglot"): ink made white, the
image reduced to 28 x 28 by an area (box) filter in floating point - each output pixel the mean ink
coverage of its 3.75 x 3.75 input patch - and rounded to uint8; images ordered by the 4-digit
character number of the file names, then by drawer; labels the alphabet's index within the split,
alphabets in the order of their character numbers.  :func:`convert` does exactly that, and the
files it writes are accepted only when their decompressed contents match the known digests
(:attr:`~oodgen.data.sources.FileSpec.payload_sha256`): a changed archive or a different rounding
cannot slip through.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from .files import DataError
from .idx import write_idx

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
ARCHIVES = {"test": "images_evaluation.zip", "train": "images_background.zip"}
SIDE_IN, SIDE_OUT = 105, 28
_NAME = re.compile(r"^(\d{4})_(\d{2})\.png$")


def box_matrix(n_in: int = SIDE_IN, n_out: int = SIDE_OUT) -> np.ndarray:
    """(n_out, n_in) weights: row i averages the input cells overlapping [i s, (i + 1) s), s = n_in / n_out,
    each weighted by the length of its overlap (an area filter along one axis; rows sum to 1)."""
    s = n_in / n_out
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * s, (i + 1) * s
        for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
            w[i, j] = (min(hi, j + 1) - max(lo, j)) / s
    return w


def downsample(ink: np.ndarray) -> np.ndarray:
    """(N, 105, 105) ink coverage in [0, 1] -> (N, 28, 28) uint8: each pixel 255 x its patch's mean ink."""
    w = box_matrix(ink.shape[-1], SIDE_OUT)
    return np.rint(255.0 * np.einsum("ij,njk,lk->nil", w, ink.astype(np.float64), w)).astype(np.uint8)


def read_archive(data: bytes | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, white ink on black; labels (N,) uint8) of one publisher zip."""
    from PIL import Image
    raw = data.read_bytes() if isinstance(data, Path) else data
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        raise DataError(f"Omniglot archive: not a zip file ({exc})") from None
    found = []
    with zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts
            m = _NAME.match(parts[-1]) if len(parts) >= 3 else None
            if m:
                found.append((int(m.group(1)), int(m.group(2)), parts[-3], info))
        if not found:
            raise DataError("Omniglot archive: no <alphabet>/<character>/NNNN_DD.png images in it")
        found.sort(key=lambda f: (f[0], f[1]))
        first = {}
        for char, _drawer, alphabet, _info in found:
            first[alphabet] = min(first.get(alphabet, char), char)
        label_of = {a: i for i, a in enumerate(sorted(first, key=first.get))}
        paper = np.stack([np.asarray(Image.open(io.BytesIO(zf.read(f[3]))).convert("1"), dtype=bool)
                          for f in found])
    if paper.shape[1:] != (SIDE_IN, SIDE_IN):
        raise DataError(f"Omniglot archive: images are {paper.shape[1:]}, expected {SIDE_IN} x {SIDE_IN}")
    labels = np.array([label_of[f[2]] for f in found], dtype=np.uint8)
    return downsample(~paper), labels


def convert(archive: bytes | Path, images_path: Path, labels_path: Path) -> None:
    """Write one split's MNIST-format files (gzip'd IDX) from the publisher's zip."""
    images, labels = read_archive(archive)
    write_idx(images_path, images)
    write_idx(labels_path, labels)
