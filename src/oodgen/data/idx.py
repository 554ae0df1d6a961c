"""Reader for IDX files (the MNIST container format), raw or gzip-compressed.

The format: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the payload in C order.  Only what the datasets of this project
use is accepted here (unsigned bytes); everything else is refused with a message that names
the file, never a traceback from inside numpy.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

_TYPE_CODES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """An IDX file is unreadable, truncated or not an IDX file at all."""


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array.

    Raises
    ------
    IDXError
        If the header is malformed or the payload size does not match the header.
    """
    if len(raw) < 4:
        raise IDXError(f"{name}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"{name}: not an IDX file (bad magic bytes {raw[:4].hex()})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _TYPE_CODES:
        raise IDXError(f"{name}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0 or ndim > 4:
        raise IDXError(f"{name}: unsupported number of dimensions {ndim}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IDXError(f"{name}: truncated header ({len(raw)} bytes, need {header_len})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _TYPE_CODES[type_code]
    expected = math.prod(dims) * dtype.itemsize        # Python ints: no int64 wrap-around
    got = len(raw) - header_len
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise IDXError(
            f"{name}: file {kind}: header says shape {dims} ({expected} payload bytes), "
            f"found {got}"
        )
    try:
        arr = np.frombuffer(raw, dtype, offset=header_len).reshape(dims)
    except ValueError as exc:   # e.g. an empty array whose other dimensions exceed numpy's limits
        raise IDXError(f"{name}: header shape {dims} cannot be represented ({exc})") from None
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file; a name ending in ``.gz`` is decompressed first."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IDXError(f"{path}: file not found") from None
    except OSError as exc:
        raise IDXError(f"{path}: cannot read ({exc.strerror})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return parse_idx(data, str(path))


def write_idx(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write a uint8 array as a (gzip'd if the name ends in .gz) IDX file."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"write_idx supports uint8 arrays only, got {arr.dtype}")
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
