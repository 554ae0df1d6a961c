"""The detector file ``DIR/detector.pt``: its format is defined, written and read here only.

``oodgen run`` writes it (:func:`write_detector`); ``oodgen score`` (:func:`oodgen.score.load_detector`),
``oodgen report`` and ``oodgen bench`` read it through :func:`read_detector`, which unpickles
nothing but tensors and plain values (``torch.load(weights_only=True)``) and checks the format
before anything else looks inside.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import first_line
from .utils import TorchFileError, atomic_torch_save, safe_torch_load

DETECTOR_FORMAT = "oodgen-detector/1"
REQUIRED_KEYS = ("format", "n_classes", "classifier", "score", "thresholds")
THRESHOLD_RULE = "95% TPR on the in-distribution validation split"


class DetectorFileError(ValueError):
    """``detector.pt`` is missing, unreadable, or not a detector this version understands."""


def detector_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/detector.pt`` (or ``run_dir`` itself if it is the file); it must exist."""
    p = Path(run_dir)
    if p.is_dir():
        p = p / "detector.pt"
    if not p.is_file():
        where = p.parent if p.name == "detector.pt" else p
        raise DetectorFileError(
            f"{p}: no trained detector here; train one first with "
            f"`oodgen run --id mnist --out {where}` (detector.pt is written at the end of a run)")
    return p


def read_detector(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(path, contents) of a run's detector file, safely read and checked for format and keys."""
    path = detector_path(run_dir)
    try:
        blob = safe_torch_load(path)
    except OSError as exc:
        raise DetectorFileError(f"{path}: cannot open detector file ({exc.strerror or first_line(exc)})") from None
    except TorchFileError as exc:
        raise DetectorFileError(f"{path}: cannot read detector file ({exc}); it is damaged or "
                                "not a detector.pt - rerun `oodgen run` to rewrite it") from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise DetectorFileError(f"{path}: not an oodgen detector file (no 'format' field)")
    if blob["format"] != DETECTOR_FORMAT:
        raise DetectorFileError(f"{path}: unknown detector format {blob['format']!r}; this version of "
                                f"oodgen reads {DETECTOR_FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in blob]
    if missing:
        raise DetectorFileError(f"{path}: detector file lacks {missing}; it is damaged - rerun `oodgen run`")
    return path, blob


def write_detector(path: str | os.PathLike, *, config: dict, n_classes: int, image_shape, classifier: dict,
                   cvae: dict, score: str, thresholds: dict[str, float], fusion: dict, pixel_bank: dict,
                   environment: dict, classes: list[str] | None = None,
                   class_pixel_bank: dict | None = None) -> None:
    """Write a run's detector file atomically (plain tensors and values only)."""
    atomic_torch_save({
        "format": DETECTOR_FORMAT,
        "config": config,
        "n_classes": n_classes,
        "image_shape": list(image_shape),
        **({"classes": classes} if classes else {}),
        "classifier": classifier,
        "cvae": cvae,
        "score": score,
        "thresholds": thresholds,
        "fusion": fusion,
        "pixel_bank": pixel_bank,
        **({"class_pixel_bank": class_pixel_bank} if class_pixel_bank is not None else {}),
        "threshold_rule": THRESHOLD_RULE,
        "environment": environment,
    }, path)
