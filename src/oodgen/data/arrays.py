"""``.npy`` / ``.npz`` files from users: their headers are checked before numpy allocates anything.

An ``.npy`` header states the array's shape and dtype, and numpy allocates that much memory before
it reads a byte of data: a 100-byte file that claims (40,000,000, 32, 32) would ask for 38 GiB.
:func:`check_npy` and :func:`check_npz` refuse a header that claims more data than the file can
hold: the bytes after the header of an ``.npy``; for each ``.npz`` member, its uncompressed size and,
if compressed, 1032 times the archive's size (deflate's best ratio).  The errors are
:class:`ValueError` with a one-line message; callers add the file's name, and catch
:data:`READ_ERRORS` around ``np.load``.
"""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from ..errors import first_line

MAX_DEFLATE_RATIO = 1032      # deflate never compresses better than about 1032:1
# What np.load raises on a damaged, crafted or too large file (zipfile raises RuntimeError for an
# encrypted member, NotImplementedError for an unknown compression).
READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
               MemoryError)


def _claimed_bytes(fh) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data) that the ``.npy`` header at ``fh``'s position claims."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, _fortran, dtype = read(fh)
    except Exception as exc:  # numpy's parser raises SyntaxError, tokenize errors, ... on a damaged header
        raise ValueError(f"damaged .npy header ({first_line(exc)})") from None
    n = 1
    for v in shape:
        n *= int(v)
    return shape, dtype, n * dtype.itemsize


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n:,} bytes"


def _refuse(shape, dtype, claimed: int, available: int, where: str) -> None:
    if claimed > available:
        raise ValueError(f"header claims a {dtype} array of shape {tuple(shape)} ({_size(claimed)}) but {where} "
                         f"holds at most {_size(available)}: truncated or crafted")


def check_npy(path: str | os.PathLike) -> None:
    """Refuse an ``.npy`` file whose header claims more data than the file holds."""
    with open(path, "rb") as fh:
        shape, dtype, claimed = _claimed_bytes(fh)
        if dtype.hasobject:
            return              # np.load(allow_pickle=False) refuses it with its own message
        _refuse(shape, dtype, claimed, os.fstat(fh.fileno()).st_size - fh.tell(), "the file")


def check_npz(path: str | os.PathLike) -> None:
    """Refuse an ``.npz`` archive with a member whose header claims more data than the archive can
    hold (a damaged archive is left to ``np.load``, which says so)."""
    total = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    with archive:
        for info in archive.infolist():     # np.load reads any member that starts as an .npy does
            limit = total if info.compress_type == zipfile.ZIP_STORED else total * MAX_DEFLATE_RATIO
            try:
                with archive.open(info) as fh:
                    if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                        continue
                with archive.open(info) as fh:
                    shape, dtype, claimed = _claimed_bytes(fh)
                    header = fh.tell()
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                raise ValueError(f"member {info.filename}: cannot read ({first_line(exc)})") from None
            if not dtype.hasobject:
                _refuse(shape, dtype, claimed, min(limit, info.file_size - header), f"member {info.filename}")
