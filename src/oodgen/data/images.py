"""Image files -> image batches: what ``oodgen score`` (and :mod:`oodgen.score`) reads.

:func:`load_inputs` reads PNG / JPEG images, .npy / .npz arrays and IDX files (recognised by their
first bytes) into one float32 batch (N, 1, 28, 28) in [0, 1]; :func:`load_shaped_inputs` does the
same for a run on other images (C, H, W).  A file whose meaning is ambiguous is refused with a
one-line :class:`oodgen.detectors.base.InputError` that names the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import first_line
from .arrays import READ_ERRORS, check_npy, check_npz
from .idx import IDXError, read_idx

IMAGE_SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SHAPES = "(28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 784)"


def _input_error(message: str) -> ValueError:
    """An :class:`oodgen.detectors.base.InputError` (imported when raised: the data layer does not
    import the detectors package at import time)."""
    from ..detectors.base import InputError
    return InputError(message)


def load_inputs(paths: Sequence[str | os.PathLike], shape: tuple[int, int, int] = (1, 28, 28),
                resize: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read images from files into one float32 batch (N, 1, 28, 28) in [0, 1].

    For a run on other images (``shape`` = its (C, H, W), e.g. (3, 32, 32)) see
    :func:`load_shaped_inputs`; what follows is the 1 x 28 x 28 reading.

    Accepted files (recognised by their first bytes, so the extension does not matter):

    * **PNG / JPEG** (Pillow), one image per file, turned upright by its EXIF orientation; an
      animated image is refused. 8-bit grayscale is used as is, 16-bit divided by 65535. RGB is converted
      with Pillow's ``convert("L")`` (ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B);
      an alpha channel is accepted only if fully opaque (there is no right background to
      composite on). A square image of another size is resized to 28 x 28 with Pillow's
      ``BOX`` filter when shrinking (area average, the filter the Omniglot set was made
      with) and ``LANCZOS`` when enlarging, in floating point, then clipped to [0, 1]; a
      non-square image is refused (cropping or padding would be a guess).
    * **.npy / .npz** arrays (an .npz must hold one array, or one named ``images``) of shape
      (28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 784): uint8 is divided by 255, float
      must already lie in [0, 1]; other integer types are refused.
    * **IDX** files (``*-ubyte``, gzip'd or not), as the MNIST-format datasets ship.

    Images keep MNIST's convention: a light glyph on a dark background.  A dark-on-light
    scan is a different distribution and will (correctly) score as OOD; invert it first.

    Returns
    -------
    images : float32 array (N, 1, 28, 28) in [0, 1].
    names : one name per image: the path as given, with ``[i]`` appended for multi-image files.

    Raises
    ------
    InputError
        With a one-line message naming the offending file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if len(paths) == 0:
        raise _input_error("no input files given")
    if tuple(shape) != (1, IMAGE_SIZE, IMAGE_SIZE):
        return load_shaped_inputs(paths, tuple(shape), resize)
    batches, names = [], []
    for p in paths:
        images, single = _load_file(Path(p))
        batches.append(images)
        label = str(p)
        names.extend([label] if single else [f"{label}[{i}]" for i in range(len(images))])
    return np.concatenate(batches).astype(np.float32, copy=False), names


def load_shaped_inputs(paths: Sequence[str | os.PathLike], shape: tuple[int, int, int],
                       resize: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read images for a run whose images are ``shape`` = (C, H, W) (a run on your own data).

    PNG / JPEG files must have the run's channels (grey for C = 1, colour for C = 3; an alpha
    channel only if fully opaque) and size; ``resize=True`` resizes them (area averaging when
    shrinking, Lanczos when enlarging).  Arrays (.npy / .npz / IDX) may be (H, W), (H, W, C),
    (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1].
    """
    from .user import UserDataError, _from_arrays, _read_picture, _to_array
    c, h, w = shape
    batches, names = [], []
    for p in map(Path, paths):
        head = _head(p)
        try:
            if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
                img, mode = _read_picture(p)
                if (mode == "L") != (c == 1):
                    raise _input_error(f"{p}: a {'grey' if mode == 'L' else 'colour'} image, but the run's images "
                                     f"are {'grey' if c == 1 else 'colour'} ({c} channel(s))")
                if (img.height, img.width) != (h, w) and not resize:
                    raise _input_error(f"{p}: image is {img.width}x{img.height}, the run's images are {w}x{h}; "
                                     "pass --resize (resize=True) to resize it")
                batches.append(_to_array(img, c, (h, w), p)[None])
                names.append(str(p))
                continue
            if head.startswith(b"\x93NUMPY"):
                arr = _np_load(p)
            elif head.startswith(b"PK"):
                arr = _npz_array(p)
            elif head.startswith(b"\x1f\x8b") or head.startswith(b"\x00\x00"):
                try:
                    arr = read_idx(p)
                except IDXError as exc:
                    raise _input_error(str(exc)) from None
            else:
                raise _input_error(f"{p}: unrecognised file type; give PNG or JPEG images, .npy/.npz arrays or IDX files")
            single = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3))
            if single:
                arr = arr[None]
            imgs = _from_arrays(arr, None, str(p), (h, w) if resize else None, None, labelled=False).images
        except UserDataError as exc:
            raise _input_error(str(exc)) from None
        if tuple(imgs.shape[1:]) != tuple(shape):
            hints = []
            if imgs.shape[1] != c:
                hints.append(f"convert them to {'grey' if c == 1 else 'colour'} first")
            if tuple(imgs.shape[2:]) != (h, w) and not resize:
                hints.append("pass --resize for another size")
            raise _input_error(f"{p}: images are {tuple(imgs.shape[1:])} (C, H, W), the run's are {tuple(shape)}"
                               + "".join(f"; {x}" for x in hints))
        batches.append(imgs)
        names.extend([str(p)] if single else [f"{p}[{i}]" for i in range(len(imgs))])
    return np.concatenate(batches).astype(np.float32, copy=False), names


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise _input_error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise _input_error(f"{path}: is a directory; give image files (e.g. {path}/*.png)") from None
    except OSError as exc:
        raise _input_error(f"{path}: cannot read ({exc.strerror})") from None
    if not head:
        raise _input_error(f"{path}: file is empty")
    return head


def _load_file(path: Path) -> tuple[np.ndarray, bool]:
    """(images (N, 1, 28, 28) float32, whether the file holds a single image)."""
    head = _head(path)
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return _load_picture(path), True
    if head.startswith(b"\x93NUMPY"):
        arr = _np_load(path)
        return _array_to_images(arr, str(path)), _single(arr)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        arr = _npz_array(path)
        return _array_to_images(arr, str(path)), _single(arr)
    if head.startswith(b"\x1f\x8b") or head.startswith(b"\x00\x00"):
        try:
            arr = read_idx(path)
        except IDXError as exc:
            raise _input_error(str(exc)) from None
        return _array_to_images(arr, str(path)), _single(arr)
    raise _input_error(f"{path}: unrecognised file type; give PNG or JPEG images, .npy/.npz arrays "
                     "or IDX (MNIST-format) files")


def _single(arr: np.ndarray) -> bool:
    return arr.shape == (IMAGE_SIZE, IMAGE_SIZE)


def _np_load(path: Path) -> np.ndarray:
    try:
        check_npy(path)
        return np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        # allow_pickle=False turns object arrays into a ValueError: say so plainly.
        raise _input_error(f"{path}: cannot read .npy ({first_line(exc)})") from None


def _npz_array(path: Path) -> np.ndarray:
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if len(keys) == 1:
                return z[keys[0]]
            if "images" in keys:
                return z["images"]
    except READ_ERRORS as exc:
        raise _input_error(f"{path}: cannot read .npz ({first_line(exc)})") from None
    if not keys:
        raise _input_error(f"{path}: .npz archive holds no arrays")
    raise _input_error(f"{path}: .npz holds several arrays {keys}; keep one, or name the images 'images'")


def _array_to_images(arr: np.ndarray, name: str) -> np.ndarray:
    shape = arr.shape
    if arr.ndim == 2 and shape == (IMAGE_SIZE, IMAGE_SIZE):
        arr = arr[None, None]
    elif arr.ndim == 2 and shape[1] == IMAGE_SIZE * IMAGE_SIZE:
        arr = arr.reshape(len(arr), 1, IMAGE_SIZE, IMAGE_SIZE)
    elif arr.ndim == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        arr = arr[:, None]
    elif arr.ndim == 4 and shape[1:] == (1, IMAGE_SIZE, IMAGE_SIZE):
        pass
    else:
        raise _input_error(f"{name}: array of shape {shape} is not 28x28 images; accepted shapes "
                         f"are {ARRAY_SHAPES}")
    if len(arr) == 0:
        raise _input_error(f"{name}: holds no images (shape {shape})")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            n_bad = int(bad.reshape(len(arr), -1).any(1).sum())
            raise _input_error(f"{name}: {n_bad} image(s) contain NaN or Inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise _input_error(f"{name}: float pixel values must be in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                             "divide 0-255 data by 255 or save it as uint8")
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        raise _input_error(f"{name}: integer pixels must be uint8 (0-255), got {arr.dtype}; "
                         "convert with .astype(np.uint8) or to floats in [0, 1]")
    raise _input_error(f"{name}: unsupported array dtype {arr.dtype}; use uint8 or float in [0, 1]")


def _load_picture(path: Path) -> np.ndarray:
    from PIL import Image

    from .user import SIXTEEN_BIT_MODES, UserDataError, open_picture, sixteen_bit_grey
    try:
        img = open_picture(path)
        x = sixteen_bit_grey(img, path) if img.mode in SIXTEEN_BIT_MODES else None
    except UserDataError as exc:
        raise _input_error(str(exc)) from None
    if x is None:
        x = np.asarray(_grey_8bit(img, path), dtype=np.float32) / 255.0
    h, w = x.shape
    if w != h:
        raise _input_error(f"{path}: image is {w}x{h}, not square; crop or pad it to a square "
                         "(ideally 28x28) first - the right crop cannot be guessed")
    if w != IMAGE_SIZE:
        flt = Image.Resampling.BOX if w > IMAGE_SIZE else Image.Resampling.LANCZOS
        resized = Image.fromarray(x, mode="F").resize((IMAGE_SIZE, IMAGE_SIZE), flt)
        x = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return x[None, None]


def _grey_8bit(img, path: Path):
    """An 8-bit picture in mode L (colour by luminance; an alpha channel only if fully opaque)."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.size and alpha.min() < 255:
            raise _input_error(f"{path}: image has transparent pixels (alpha < 255); flatten it onto "
                             "a background first - the right background colour cannot be guessed")
        return img.convert("L")
    if img.mode in ("RGB", "1"):
        return img.convert("L")
    if img.mode != "L":
        raise _input_error(f"{path}: unsupported image mode {img.mode}; save it as 8- or 16-bit grayscale or RGB")
    return img
