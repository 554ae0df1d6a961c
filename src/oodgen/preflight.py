"""What ``oodgen run`` checks of a run on your own data before its first epoch.

Every input is read and checked before anything trains: the training and test sets
(:mod:`oodgen.data.user`, read by :func:`oodgen.run.load_setting`) and every ``--ood`` set, whose
images must have the training images' size and channels.  Then the data must be large enough for
every stage:

* the percentiles of the fused rules (and the 95 %-TPR thresholds) come from the validation split,
  which needs at least :data:`~oodgen.detectors.fusion.MIN_CALIBRATION` (20) images;
* the Type II ellipsoids need more training encodings in every class than latent dimensions.  Where
  a class has too few, the latent dimension is reduced to fit, down to :data:`MIN_LATENT`;
* the nearest-neighbour distances of the fused rules (feature and pixel banks) search at most their
  bank, so k is reduced to the bank's size where the training set is smaller than k.

Each reduction is printed and recorded (``metrics["data"]["reduced"]``).

The recommended rule's per-class pixel banks (at most :data:`~oodgen.detectors.image_stats.PIXEL_BANK_SIZE`
8-bit images of each class) are stored in ``detector.pt``; their size is estimated, printed when it exceeds
:data:`LARGE_BANKS_MB` and recorded in bytes (``metrics["data"]["class_pixel_banks_bytes"]``).

An ``--ood`` set that repeats in-distribution images (identical 8-bit pixels) measures nothing
about them: one that is more than :data:`MAX_OVERLAP` training, validation or test images is
refused; fewer repeats are reported and recorded (``metrics["data"]["ood_overlap"]``).

Errors are :class:`oodgen.data.user.UserDataError` (one line, exit status 2 from the command
line); ``oodgen run`` writes ``config.json`` only after these checks pass, so a refused run leaves
nothing that blocks the corrected command.
"""
from __future__ import annotations

import hashlib

import numpy as np

from . import data as D
from .detectors.fusion import FEATURE_K, MIN_CALIBRATION, FeatureKNNFusion
from .detectors.image_stats import PIXEL_BANK_SIZE, PIXEL_K, REFERENCE_BANK, scaled_k
from .data.user import UserDataError, load_user

MIN_LATENT = 2            # the smallest latent dimension small data may reduce a CVAE to
MAX_OVERLAP = 0.5         # an OOD set more than this fraction in-distribution images is refused
LARGE_BANKS_MB = 100.0    # per-class pixel banks larger than this are announced before training
REDUCED_LABELS = {"latent_dim": "latent dimension", "feature_knn_k": "k of the feature KNN",
                  "pixel_knn_k": "k of the pixel KNN"}
MINIMUM = (f"a run needs {MIN_CALIBRATION} validation images (1/12 of the training images after the test "
           f"split, at least {MIN_CALIBRATION}) and, beyond them, {MIN_LATENT + 1} training images in every "
           "class: about 40 images in 2 classes at the least (docs/using.md, 'Your own data')")


def load_user_ood(name: str, path: str, shape, *, size=None, channels=None, n=None) -> D.ImageSet:
    """The ``--ood NAME=PATH`` set (its first ``n`` images), which must have the run's image ``shape``."""
    imgs = load_user(path, size=size, channels=channels, labelled=False)
    if imgs.shape != tuple(shape):
        raise D.DataError(f"OOD set {name} ({path}): images are {imgs.shape} (C, H, W) but the run's are "
                          f"{tuple(shape)}; pass --size H W and/or --channels to convert them")
    images = imgs.images[:n] if n else imgs.images
    return D.ImageSet(name, images, np.full(len(images), -1, np.int64))


def fit_small_data(latent: int, y_train: np.ndarray, classes: list[str], n_val: int,
                   log=print) -> tuple[int, dict]:
    """(the latent dimension the data allows, ``{"reduced": ...}`` where something was reduced):
    :class:`UserDataError` naming what is missing when the data is too small for any run."""
    counts = np.bincount(np.asarray(y_train), minlength=len(classes))
    problems = []
    if n_val < MIN_CALIBRATION:
        problems.append(f"the validation split has {n_val} images")
    few = [f"{classes[i]!r} has {int(c)}" for i, c in enumerate(counts) if c <= MIN_LATENT]
    if few:
        problems.append(f"fewer than {MIN_LATENT + 1} training images after the validation split in a class ("
                        + ", ".join(few) + ")")
    if problems:
        raise UserDataError("too little data: " + "; ".join(problems) + f"; {MINIMUM}")
    reduced = {}
    fitted = min(latent, int(counts.min()) - 1)
    if fitted < latent:
        reduced["latent_dim"] = {"asked": latent, "used": fitted, "reason": (
            f"class {classes[int(counts.argmin())]!r} has {int(counts.min())} training images, and the Type II "
            "ellipsoids need more encodings in every class than latent dimensions")}
    n = len(y_train)
    bank = len(FeatureKNNFusion().bank_indices(n))
    for name, k, size in (("feature_knn_k", scaled_k(FEATURE_K, bank, n), bank),
                          ("pixel_knn_k", scaled_k(PIXEL_K, min(n, PIXEL_BANK_SIZE), min(n, REFERENCE_BANK)),
                           min(n, PIXEL_BANK_SIZE))):
        if k > size:
            reduced[name] = {"asked": k, "used": size, "reason": f"its bank holds {size} training images"}
    for name, r in reduced.items():
        log(f"small data: {REDUCED_LABELS[name]} reduced from {r['asked']} to {r['used']} ({r['reason']})")
    return fitted, ({"reduced": reduced} if reduced else {})


def class_bank_mb(y_train, shape) -> float:
    """Megabytes (10^6 bytes) of the per-class pixel banks that ``detector.pt`` stores for training labels
    ``y_train`` and images of ``shape`` (C, H, W): at most PIXEL_BANK_SIZE 8-bit images of each class."""
    _, counts = np.unique(np.asarray(y_train).reshape(-1), return_counts=True)
    return float(np.minimum(counts, PIXEL_BANK_SIZE).sum()) * float(np.prod(shape)) / 1e6


def _digests(images: np.ndarray, chunk: int = 4096) -> list[bytes]:
    """A 16-byte digest of each image's 8-bit pixels."""
    out = []
    for i in range(0, len(images), chunk):
        rows = np.round(images[i:i + chunk] * 255).astype(np.uint8).reshape(len(images[i:i + chunk]), -1)
        out += [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
    return out


def check_overlap(ood_sets: dict[str, D.ImageSet], in_distribution: list[np.ndarray], log=print) -> dict:
    """Refuse an OOD set that is mostly in-distribution images; report (and return, to be recorded)
    how many images each other OOD set repeats."""
    seen = set()
    for images in in_distribution:
        seen.update(_digests(images))
    repeats = {}
    for name, ood in ood_sets.items():
        n = sum(d in seen for d in _digests(ood.images))
        if not n:
            continue
        what = f"--ood {name}: {n} of its {len(ood)} images are also in-distribution (training or test) images"
        if n > MAX_OVERLAP * len(ood):
            raise UserDataError(f"{what}; an OOD set must come from elsewhere (its AUROC would measure nothing)")
        log(f"warning: {what}; they count as OOD in its metrics")
        repeats[name] = n
    return {"ood_overlap": repeats} if repeats else {}


def check_user_run(cfg, ood_paths: dict[str, str], train, validation, test, classes: list[str], shape,
                   log=print) -> tuple[int, dict[str, D.ImageSet], dict]:
    """Everything above for a run on your own data (``train`` / ``validation`` / ``test``: (images,
    labels) of its splits): (latent dimension to train with, the ``--ood`` sets loaded as they are
    evaluated, what to record in ``metrics["data"]``)."""
    ood_sets = {name: load_user_ood(name, path, shape, size=cfg.size, channels=cfg.channels, n=cfg.prof.n_eval)
                for name, path in ood_paths.items()}
    latent, notes = fit_small_data(cfg.latent, np.asarray(train[1]), classes, len(validation[0]), log)
    notes.update(check_overlap(ood_sets, [np.asarray(s[0]) for s in (train, validation, test)], log))
    mb = class_bank_mb(train[1], shape)
    notes["class_pixel_banks_bytes"] = int(round(mb * 1e6))
    if mb > LARGE_BANKS_MB:
        log(f"note: detector.pt will hold {mb:.0f} MB of per-class pixel banks (up to {PIXEL_BANK_SIZE} images "
            f"of each of {len(classes)} classes), which the recommended rule searches")
    return latent, ood_sets, notes
