"""Your own images: an image folder, an ``.npz`` array file, or a pair of IDX files.

* **Image folder** (torchvision's ``ImageFolder`` layout): one sub-folder per class, holding PNG or
  JPEG files; the sorted sub-folder names are the class names.  For an OOD set, a folder of
  images without sub-folders is accepted too (no labels).
* **.npz** with ``x`` of shape (N, H, W), (N, H, W, C) or (N, C, H, W) (C = 1 or 3), uint8 or
  float in [0, 1], and ``y`` (N,) integer labels (optional for an OOD set).  Labels need not be
  0..K-1: the sorted distinct values become classes 0..K-1 (their values are the class names).
* **IDX** (MNIST format): ``PATH`` is the images file and ``PATH`` with ``images`` replaced by
  ``labels`` (e.g. ``train-images-idx3-ubyte.gz`` / ``train-labels-idx1-ubyte.gz``) the labels.

Every image set comes back as float32 (N, C, H, W) in [0, 1] (16-bit grey PNGs divided by 65535,
pictures turned upright by their EXIF orientation).  Nothing is silently reinterpreted: an animated
image is refused, images of different sizes are refused unless ``size`` is given (then each is
resized with Pillow: area averaging when shrinking, Lanczos when enlarging), grey and colour
files in one set are refused unless ``channels`` is given (then converted), an alpha channel must
be fully opaque, and a training set needs at least two classes with ``MIN_PER_CLASS`` images each.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import first_line
from .arrays import READ_ERRORS, check_npz
from .datasets import DataError
from .idx import IDXError, read_idx

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_PER_CLASS = 10
MAX_PIXELS = 1 << 26              # 67 M pixels: a larger picture is refused before it is decoded
PICTURE_FORMATS = ("PNG", "JPEG", "MPO")   # what Pillow calls the files read (MPO: a phone's JPEG)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")   # Pillow's modes of a 16-bit grey PNG


class UserDataError(DataError):
    """A user-given image set cannot be read as asked; the message names the file."""


@dataclass
class UserImages:
    """Images float32 (N, C, H, W) in [0, 1], labels int64 (N,) (-1 where there are none)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])

    def digest(self) -> str:
        """SHA-256 of the images (as 8-bit pixels) and labels: what a run records of its data."""
        h = hashlib.sha256()
        h.update(np.round(self.images * 255).astype(np.uint8).tobytes())
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()


def load_user(path, *, size: tuple[int, int] | None = None, channels: int | None = None,
              labelled: bool = True) -> UserImages:
    """Read a user image set (see the module docstring).

    ``labelled=True`` (training / test data) requires class labels; ``labelled=False`` (an OOD set)
    accepts unlabelled images.  ``size`` = (H, W) resizes every image; ``channels`` (1 or 3)
    converts every image to grey or colour.
    """
    p = Path(path)
    if channels not in (None, 1, 3):
        raise UserDataError(f"{p}: channels must be 1 (grey) or 3 (colour), got {channels}")
    if size is not None:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 1:
            raise UserDataError(f"size must be two positive integers (H W), got {size}")
    if not p.exists():
        raise UserDataError(f"{p}: no such file or folder")
    if p.is_dir():
        out = _load_folder(p, size, channels, labelled)
    else:
        with open(p, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"PK"):
            out = _load_npz(p, size, channels, labelled)
        elif head.startswith(b"\x1f\x8b") or head.startswith(b"\x00\x00"):
            out = _load_idx(p, size, channels, labelled)
        else:
            raise UserDataError(f"{p}: not an image folder, .npz or IDX file")
    if labelled:
        _check_classes(out)
    return out


def _check_classes(data: UserImages) -> None:
    counts = np.bincount(data.labels, minlength=len(data.classes))
    if len(data.classes) < 2:
        raise UserDataError(f"{data.source}: a classifier needs at least two classes, found {len(data.classes)}")
    few = [f"{data.classes[i]} ({int(c)})" for i, c in enumerate(counts) if c < MIN_PER_CLASS]
    if few:
        raise UserDataError(f"{data.source}: classes with fewer than {MIN_PER_CLASS} images: {', '.join(few)}")


# ----------------------------------------------------------------------------- folders

def _load_folder(root: Path, size, channels, labelled: bool) -> UserImages:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        files, labels = [], []
        for k, d in enumerate(subdirs):
            found = _image_files(d)
            files += found
            labels += [k] * len(found)
        classes = [d.name for d in subdirs]
    else:
        if labelled:
            raise UserDataError(f"{root}: expected one sub-folder per class (ImageFolder layout), found none")
        files, labels, classes = _image_files(root), [], []
    if not files:
        raise UserDataError(f"{root}: no PNG or JPEG images found")
    pictures = [_read_picture(f) for f in files]
    modes = {m for _, m in pictures}
    if channels is None:
        if len(modes) > 1:
            raise UserDataError(f"{root}: mixes grey and colour images; pass channels (--channels 1 or 3) "
                                "to convert them all")
        channels = 1 if modes == {"L"} else 3
    arrays = [_to_array(img, channels, size, f) for (img, _), f in zip(pictures, files)]
    sizes = [a.shape[1:] for a in arrays]
    usual = max(set(sizes), key=sizes.count)
    odd = [(f, s) for f, s in zip(files, sizes) if s != usual]
    if odd:
        ex = ", ".join(f"{f.relative_to(root)} is {s[1]}x{s[0]}" for f, s in odd[:3]) + (", ..." if len(odd) > 3 else "")
        raise UserDataError(f"{root}: images of different sizes: {len(files) - len(odd)} are {usual[1]}x{usual[0]}, "
                            f"but {ex}; pass size (--size H W) to resize them")
    y = np.array(labels, dtype=np.int64) if labels else np.full(len(arrays), -1, np.int64)
    return UserImages(np.stack(arrays), y, classes, str(root))


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def open_picture(path: Path):
    """A PNG / JPEG file as a fully decoded PIL image, turned upright by its EXIF orientation tag (a
    phone's portrait photo is stored sideways with that tag).  Refused with :class:`UserDataError`:
    a file Pillow cannot decode, another format under a PNG or JPEG name, an animated image (an APNG:
    which frame is meant cannot be guessed) and one of more than :data:`MAX_PIXELS` pixels (checked
    before decoding)."""
    import warnings

    from PIL import Image, ImageOps
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # MAX_PIXELS is the limit here
            with Image.open(path) as im:
                if im.format not in PICTURE_FORMATS:
                    raise UserDataError(f"{path}: a {im.format} image, not PNG or JPEG; save it as PNG")
                if im.width * im.height > MAX_PIXELS:
                    raise UserDataError(f"{path}: image is {im.width}x{im.height}, more than {MAX_PIXELS:,} pixels; "
                                        "shrink it first")
                # An MPO (a phone's JPEG) holds the photo and a preview: its first frame is the photo.
                if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
                    raise UserDataError(f"{path}: an animated image ({im.n_frames} frames); save the frame "
                                        "you mean as a still PNG")
                im.load()
                return ImageOps.exif_transpose(im)
    except UserDataError:
        raise
    except Exception as exc:  # Pillow raises many types for a damaged or crafted file; all mean the same here
        raise UserDataError(f"{path}: cannot read image ({first_line(exc)})") from None


def sixteen_bit_grey(img, path) -> np.ndarray:
    """A 16-bit grey picture (Pillow mode ``I;16``, or ``I`` for PNG) as float32 (H, W) in [0, 1]:
    divided by 65535, where Pillow's conversion to 8 bits would clip every value above 255."""
    a = np.asarray(img, dtype=np.float32)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise UserDataError(f"{path}: {img.mode} pixels outside 0-65535; save it as an 8- or 16-bit PNG")
    return a / 65535.0


def _read_picture(path: Path):
    """(PIL image, ``"L"`` or ``"RGB"``): grey images in mode L, or in mode F (float, [0, 1]) when
    16-bit; colour ones in mode RGB."""
    from PIL import Image
    img = open_picture(path)
    palette = img.mode == "P"
    if img.mode in ("RGBA", "LA") or (palette and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            raise UserDataError(f"{path}: has transparent pixels; flatten it onto a background first")
        img = rgba.convert("RGB") if img.mode != "LA" else img.convert("L")
    if img.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray(sixteen_bit_grey(img, path), mode="F"), "L"
    if img.mode in ("1", "L"):
        return img.convert("L"), "L"
    img = img.convert("RGB")
    if palette and _is_grey(img):      # a palette of grey levels is a grey image
        return img.convert("L"), "L"
    return img, "RGB"


def _is_grey(img) -> bool:
    a = np.asarray(img)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def _to_array(img, channels: int, size, path: Path) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] of a picture from :func:`_read_picture`, resized to ``size``."""
    from PIL import Image
    if img.mode != "F":            # F: 16-bit grey, already in [0, 1]
        img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        shrink = size[0] * size[1] < img.height * img.width
        img = img.resize((size[1], size[0]), Image.BOX if shrink else Image.LANCZOS)
    a = np.asarray(img, dtype=np.float32) / (1.0 if img.mode == "F" else 255.0)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if len(a) != channels:
        a = np.repeat(a, channels, axis=0)
    return np.clip(a, 0.0, 1.0)


# ----------------------------------------------------------------------------- arrays

def _load_npz(path: Path, size, channels, labelled: bool) -> UserImages:
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "x" not in keys:
                raise UserDataError(f"{path}: .npz needs an array 'x' (images) and 'y' (labels); it has {sorted(keys)}")
            x = z["x"]
            y = z["y"] if "y" in keys else None
    except READ_ERRORS as exc:
        raise UserDataError(f"{path}: cannot read .npz ({first_line(exc)})") from None
    return _from_arrays(x, y, str(path), size, channels, labelled)


def _load_idx(path: Path, size, channels, labelled: bool) -> UserImages:
    try:
        x = read_idx(path)
        lbl = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
        y = read_idx(lbl) if lbl != path and lbl.exists() else None
    except IDXError as exc:
        raise UserDataError(str(exc)) from None
    return _from_arrays(x, y, str(path), size, channels, labelled)


def _from_arrays(x: np.ndarray, y, source: str, size, channels, labelled: bool) -> UserImages:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        xf = x.astype(np.float32)
        if not np.all(np.isfinite(xf)):
            raise UserDataError(f"{source}: images contain NaN or Inf")
        if xf.size and (xf.min() < 0 or xf.max() > 1):
            raise UserDataError(f"{source}: float images must lie in [0, 1], got [{xf.min():.3g}, {xf.max():.3g}]; "
                                "divide 8-bit pixels by 255")
    else:
        raise UserDataError(f"{source}: images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if xf.ndim == 3:
        xf = xf[:, None]
    elif xf.ndim == 4:
        first, last = xf.shape[1] in (1, 3), xf.shape[3] in (1, 3)
        if last and not first:
            xf = xf.transpose(0, 3, 1, 2)
        elif first == last:
            raise UserDataError(f"{source}: cannot tell the channel axis of images of shape {x.shape}; "
                                "give (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3")
    else:
        raise UserDataError(f"{source}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}")
    if len(xf) == 0:
        raise UserDataError(f"{source}: no images")
    if channels is not None and channels != xf.shape[1]:
        if channels == 3:
            xf = np.repeat(xf, 3, axis=1)
        else:      # ITU-R 601-2 luma, as Pillow's convert("L")
            xf = (0.299 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2])[:, None].astype(np.float32)
    if size is not None and tuple(xf.shape[2:]) != tuple(size):
        xf = _resize(xf, size)
    xf = np.ascontiguousarray(xf)
    if y is None:
        if labelled:
            raise UserDataError(f"{source}: no labels (an .npz needs 'y'; IDX needs its labels file)")
        return UserImages(xf, np.full(len(xf), -1, np.int64), [], source)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(xf):
        raise UserDataError(f"{source}: labels must be {len(xf)} integers, got dtype {y.dtype} shape {y.shape}")
    values, codes = np.unique(y, return_inverse=True)
    return UserImages(xf, codes.astype(np.int64), [str(v) for v in values], source)


def _resize(x: np.ndarray, size) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(x)
    mode = "area" if size[0] * size[1] < x.shape[2] * x.shape[3] else "bicubic"
    out = F.interpolate(t, size=tuple(size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out.clamp(0, 1).numpy()


def split(data: UserImages, test_fraction: float, seed: int) -> tuple[UserImages, UserImages, np.ndarray]:
    """A seeded split of ``data`` into (train, test, test indices); every class keeps at least one
    image on each side where it has two or more."""
    if not 0.0 < test_fraction < 1.0:
        raise UserDataError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == c)
        rng.shuffle(idx)
        k = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx))))) if len(idx) > 1 else 0
        test_idx.append(idx[:k])
    test_idx = np.sort(np.concatenate(test_idx))
    mask = np.zeros(len(data), bool)
    mask[test_idx] = True
    pick = lambda m: UserImages(data.images[m], data.labels[m], data.classes, data.source)  # noqa: E731
    return pick(~mask), pick(mask), test_idx


def stratified_head(labels: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of ``n`` of the images with ``labels`` that keep every class in proportion
    (at least one image each; the first ones of each class): how a profile's smaller budget
    subsets a class-sorted folder without dropping classes."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise UserDataError(f"cannot keep {len(classes)} classes in {n} images")
    share = counts * n / len(labels)
    k = np.maximum(1, np.floor(share)).astype(np.int64)
    for i in np.argsort(np.floor(share) - share, kind="stable"):    # largest remainders first
        if k.sum() >= n:
            break
        k[i] += 1
    while k.sum() > n:                 # the at-least-one rule overshot: take from the largest classes
        k[np.argmax(k)] -= 1
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:m] for c, m in zip(classes, k)]))
