"""Use a trained detector: load ``DIR/detector.pt``, read images from files, score them.

``oodgen run ... --out DIR`` leaves ``DIR/detector.pt``; this module turns it back into an
object that scores new images (higher = more OOD) and calls them OOD or in-distribution
with the threshold stored at training time (95 % TPR on the in-distribution validation split)::

    from oodgen.score import load_detector, load_inputs
    det = load_detector("runs/mnist-quick")
    images, names = load_inputs(["digit.png", "batch.npy"])
    det.score(images), det.decide(images), det.predict(images), det.predict_class(images)

The command line is ``oodgen score DIR INPUT... [--out FILE.csv|FILE.json] [--threshold X]``.

Inputs are never silently reinterpreted: a file whose meaning is ambiguous (alpha channel
that is not fully opaque, non-square image, integer array that is not uint8, float array
outside [0, 1], NaN) is refused with a one-line message that names the file.
The files are read by :mod:`oodgen.data.images`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .artifact import DETECTOR_FORMAT, DetectorFileError, read_detector  # noqa: F401 (re-exported)
from .data.images import (ARRAY_SHAPES, IMAGE_SIZE, IMAGE_SUFFIXES,  # noqa: F401 (re-exported)
                          load_inputs, load_shaped_inputs)
from .detectors.base import InputError, check_images  # noqa: F401 (InputError re-exported)
from .detectors.fusion import FEATURE_RULE, NEEDS_STATS, RULES as FUSION_RULES, FeatureKNNFusion
from .detectors.image_stats import PixelBank
from .detectors.oodgen import SCORES, score_images
from .config import SCORE_ALIASES, Variant, resolve_score
from .metrics import threshold_at_tpr
from .models import CVAE, PRECISIONS, Fig6cCNN, as_inference, resolve_precision
from .train import predict_logits


@dataclass
class ScoringDetector:
    """A trained n+1 classifier restored from ``detector.pt``, ready to score images.

    Attributes
    ----------
    classifier : the Fig. 6c CNN with ``n_classes + 1`` outputs (eval mode, CPU).
    n_classes : number of in-distribution classes.
    score_rule : one of :data:`oodgen.detectors.oodgen.SCORES`: the run's own, or the one passed to
        :func:`load_detector` (``"ood-class"`` = p(n+1 | x), ``"max-in"`` = 1 - max in-distribution
        probability, the fused rules of :mod:`oodgen.detectors.fusion`).
    thresholds : the stored 95 %-TPR threshold of every score rule.
    config : the run configuration (``RunConfig.to_dict()``).
    path : the file it was loaded from.
    fusion, cvae, pixel_bank : what the fused rules need (``None`` where the rule does not).
    precision : ``"fp32"`` or ``"bf16"``, the precision the networks score in
        (:mod:`oodgen.models.inference`; :func:`load_detector` chooses it).
    """

    classifier: Fig6cCNN
    n_classes: int
    score_rule: str
    thresholds: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    batch_size: int = 256
    fusion: FeatureKNNFusion | None = None
    cvae: CVAE | None = None
    pixel_bank: PixelBank | None = None
    image_shape: tuple[int, int, int] = (1, 28, 28)
    classes: list[str] | None = None
    precision: str = "fp32"

    @property
    def threshold(self) -> float:
        """Threshold of :attr:`score_rule`: scores above it are called OOD (95 % of the
        in-distribution validation images score at or below it)."""
        return self.thresholds[self.score_rule]

    def logits(self, x) -> torch.Tensor:
        """The n+1 logits of images ``x`` ((N, C, H, W) of the run's :attr:`image_shape`; (N, H, W)
        for grey runs), numpy or torch."""
        return predict_logits(self.classifier, check_images(x, "score input", shape=self.image_shape), self.batch_size)

    def _scores_and_logits(self, x) -> tuple[np.ndarray, torch.Tensor]:
        return score_images(self.score_rule, self.classifier, check_images(x, "score input", shape=self.image_shape),
                            self.batch_size, self.fusion, self.cvae, self.pixel_bank)

    def score(self, x) -> np.ndarray:
        """OOD scores, float64 (N,), higher = more OOD, by the stored rule."""
        return self._scores_and_logits(x)[0]

    def predict_class(self, x) -> np.ndarray:
        """Predicted in-distribution class, int64 (N,): argmax over the first n outputs."""
        return self.logits(x)[:, :self.n_classes].argmax(1).numpy()

    @property
    def threshold_(self) -> float:
        """The estimators' name of :attr:`threshold` (:class:`oodgen.detectors.base.Detector`)."""
        return self.threshold

    def predict(self, x) -> np.ndarray:
        """OOD labels, int64 (N,): 1 = OOD (score above the threshold), 0 = in-distribution, as
        every detector's ``predict`` (PyOD's contract); the class is :meth:`predict_class`."""
        return self.decide(x).astype(np.int64)

    def decide(self, x, threshold: float | None = None) -> np.ndarray:
        """True where an image is called OOD: ``score(x) > threshold`` (default: the stored one)."""
        t = self.threshold if threshold is None else _check_threshold(threshold)
        return self.score(x) > t

    def evaluate(self, x, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, OOD decisions, predicted classes) from one forward pass."""
        t = self.threshold if threshold is None else _check_threshold(threshold)
        scores, logits = self._scores_and_logits(x)
        return scores, scores > t, logits[:, :self.n_classes].argmax(1).numpy()


def _check_threshold(t: float) -> float:
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be a finite number, got {t}")
    return t


def load_detector(run_dir: str | os.PathLike, rule: str | None = None, precision: str = "fp32") -> ScoringDetector:
    """Load the detector written by :func:`oodgen.run.run` into ``run_dir`` (or a detector.pt path).

    ``rule`` scores with another of the run's score rules than the one it reports (every rule's
    95 %-TPR threshold is stored); default: the run's own.

    ``precision``: ``"fp32"`` (default: the scores ``oodgen run`` measured), ``"bf16"`` or
    ``"auto"`` (bfloat16 on a CPU with AMX or a bf16-capable GPU, else float32;
    :mod:`oodgen.models.inference`): 2-3x faster where bfloat16 is native, at the cost of AUROC
    shifts measured in ``benchmarks/RESULTS.md`` (up to 0.13 points for p(n+1) on F-MNIST).

    The file is read with ``torch.load(weights_only=True)``: only tensors and plain Python
    values are unpickled, never arbitrary objects.

    Raises
    ------
    DetectorFileError
        If the file is missing or corrupt, has an unknown ``format``, or its weights do not fit
        the Fig. 6c classifier with ``n_classes + 1`` outputs.
    """
    path, blob = read_detector(run_dir)
    n_classes, thresholds = blob["n_classes"], blob["thresholds"]
    if rule is None:
        rule = blob["score"]
    elif rule in SCORE_ALIASES:
        rule = resolve_score(rule, str((blob.get("config") or {}).get("id", "")))
    elif rule not in SCORES:
        raise ValueError(f"unknown score rule {rule!r}; use one of {SCORE_ALIASES + SCORES}")
    if not isinstance(n_classes, int) or n_classes < 1:
        raise DetectorFileError(f"{path}: invalid n_classes {n_classes!r}")
    if rule not in SCORES:
        raise DetectorFileError(f"{path}: unknown score rule {rule!r}; this version knows {SCORES}")
    shape = blob.get("image_shape", [1, 28, 28])
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise DetectorFileError(f"{path}: invalid image_shape {shape!r}")
    shape = tuple(shape)
    classifier = Fig6cCNN(n_classes + 1, shape[0], shape[1:])
    try:
        classifier.load_state_dict(blob["classifier"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DetectorFileError(f"{path}: classifier weights do not fit a Fig6cCNN with "
                                f"{n_classes + 1} outputs ({first})") from None
    precision = resolve_precision(precision)
    as_inference(classifier, precision)
    fusion = None
    if rule in FUSION_RULES:
        if not isinstance(blob.get("fusion"), dict):
            raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored feature bank ('fusion'), "
                                    "which this file lacks - rerun `oodgen run` with this version")
        try:
            fusion = FeatureKNNFusion.from_state_dict(blob["fusion"])
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise DetectorFileError(f"{path}: damaged feature bank ({exc})") from None
    if isinstance(thresholds, dict) and rule == FEATURE_RULE and rule not in thresholds and fusion is not None:
        # A file written before feature-knn was a rule: its threshold is the same 95 % quantile of the
        # calibration (validation) distances that `oodgen run` stores for every rule, and those are in the file.
        thresholds = {**thresholds, rule: threshold_at_tpr(fusion.calib_knn_, 0.95)}
    if not isinstance(thresholds, dict) or rule not in thresholds:
        raise DetectorFileError(f"{path}: no stored threshold for score rule {rule!r}")
    cvae = pixel_bank = None
    if rule in NEEDS_STATS:
        cvae = _load_cvae(path, blob, n_classes, rule, fusion, shape, precision)
        try:
            pixel_bank = PixelBank.from_state_dict(blob["pixel_bank"])
        except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
            raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored pixel bank, which is missing "
                                    f"or damaged ({type(exc).__name__}: {exc}) - rerun `oodgen run`") from None
    return ScoringDetector(fusion=fusion, cvae=cvae, pixel_bank=pixel_bank, classifier=classifier,
                           n_classes=n_classes, score_rule=rule,
                           thresholds={k: float(v) for k, v in thresholds.items()},
                           config=blob.get("config", {}), environment=blob.get("environment", {}),
                           path=path, image_shape=shape, classes=blob.get("classes"), precision=precision)


def _load_cvae(path: Path, blob: dict, n_classes: int, rule: str, fusion: FeatureKNNFusion,
               shape=(1, 28, 28), precision: str = "fp32") -> CVAE:
    """The CVAE that rule ``rule`` needs, from ``blob["cvae"]`` (latent size from its weights)."""
    state = blob.get("cvae")
    if not isinstance(state, dict) or "encoder.mu.weight" not in state:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored CVAE ('cvae'), which this file "
                                "lacks - rerun `oodgen run`")
    if fusion.calib_stats_ is None:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs calibration statistics that this file's "
                                "feature bank lacks - rerun `oodgen run` with this version")
    variant = Variant.from_dict((blob.get("config") or {}).get("variant") or {})
    cvae = CVAE.for_variant(n_classes, int(state["encoder.mu.weight"].shape[0]), variant, shape)
    try:
        cvae.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DetectorFileError(f"{path}: CVAE weights do not fit {n_classes} classes ({first})") from None
    # Scoring only: channels-last is 1.5x faster (oodgen.models.inference).
    return as_inference(cvae, precision)


# ----------------------------------------------------------------------------- command line

RESULT_FIELDS = ("name", "score", "decision", "predicted_class")


def score_files(run_dir: str | os.PathLike, paths: Sequence[str | os.PathLike],
                threshold: float | None = None, rule: str | None = None, resize: bool = False,
                precision: str = "fp32") -> tuple[ScoringDetector, list[dict[str, Any]], float]:
    """Score files with the detector of ``run_dir`` (by ``rule``, default the run's): (detector, one
    row per image, threshold used)."""
    det = load_detector(run_dir, rule, precision)
    images, names = load_inputs(paths, shape=det.image_shape, resize=resize)
    t = det.threshold if threshold is None else _check_threshold(threshold)
    scores, ood, pred = det.evaluate(images, t)
    rows = [{"name": n, "score": float(s), "decision": "ood" if o else "in", "predicted_class": int(c)}
            for n, s, o, c in zip(names, scores, ood, pred)]
    return det, rows, t


def write_results(path: str | os.PathLike, rows: list[dict[str, Any]], det: ScoringDetector,
                  threshold: float) -> None:
    """Write rows as CSV or JSON, chosen by the file extension (atomically)."""
    from .utils import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "name": spreadsheet_safe(r["name"]), "score": repr(r["score"])} for r in rows)
        data = buf.getvalue()
    elif ext == ".json":
        data = json.dumps({
            "detector": str(det.path),
            "score_rule": det.score_rule,
            "threshold": threshold,
            "threshold_rule": "score > threshold is OOD" + (
                "" if threshold == det.threshold else " (threshold given on the command line)"),
            "n_classes": det.n_classes,
            "precision": det.precision,
            "results": rows,
        }, indent=2) + "\n"
    else:
        raise ValueError(f"--out {path}: unknown extension {path.suffix!r}; use .csv or .json")
    atomic_write_bytes(path, data.encode())


# A CSV cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` for a CSV cell, with a leading ``'`` where a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def check_out_path(path: str | os.PathLike) -> bool:
    """Refuse an ``--out`` path that cannot be written before anything is scored (a folder, a path under
    a file, a folder that does not take new files); returns whether it replaces an existing file."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out {path}: unknown extension {path.suffix!r}; use .csv or .json")
    if path.is_dir():
        raise ValueError(f"--out {path}: is a folder; give a file name ending in .csv or .json")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent            # atomic_write_bytes creates the missing folders
    if not folder.is_dir():
        raise ValueError(f"--out {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".oodgen-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--out {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path.exists()


def _print_rows(rows: list[dict[str, Any]]) -> None:
    width = max(len("name"), *(len(r["name"]) for r in rows))
    print(f"{'name':<{width}}  {'score':>10}  decision  class")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['score']:>10.6f}  {r['decision']:<8}  {r['predicted_class']}")
    sys.stdout.flush()


def _cmd_score(args: argparse.Namespace) -> int:
    replaces = args.out is not None and check_out_path(args.out)
    det, rows, t = score_files(args.run_dir, args.inputs, args.threshold, args.score, args.resize, args.precision)
    printed = not args.quiet
    if printed:
        try:
            _print_rows(rows)
        except BrokenPipeError:
            # `oodgen score ... | head` closed the pipe: not an error.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.out is not None:
        try:
            write_results(args.out, rows, det, t)
        except OSError as exc:
            if not printed:
                _print_rows(rows)         # the scores are never lost
            raise ValueError(f"--out {args.out}: cannot write ({exc.strerror or exc}); the scores are printed "
                             "above") from None
    n_ood = sum(r["decision"] == "ood" for r in rows)
    written = "" if args.out is None else f", written to {args.out}" + (", replacing the file there" if replaces else "")
    print(f"{len(rows)} image(s): {n_ood} ood, {len(rows) - n_ood} in "
          f"(score {det.score_rule}, threshold {t:.6g}{written})", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``oodgen score`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "score", help="score images with a trained detector (higher = more OOD)",
        description="Score images with the detector of a run directory. One row per image: name, "
                    "score (higher = more OOD), decision (ood if score > threshold, else in), "
                    "predicted in-distribution class.")
    p.add_argument("run_dir", metavar="DIR", help="run directory written by `oodgen run --out DIR`")
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="PNG/JPEG images, .npy/.npz arrays or IDX files")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the rows to FILE.csv or FILE.json (by extension)")
    p.add_argument("--threshold", type=float, default=None,
                   help="OOD if score > X (default: the run's 95%% TPR threshold)")
    p.add_argument("--score", choices=[*SCORE_ALIASES, *SCORES], default=None,
                   help="score rule (default: the one the run reports, `recommended` unless the run was given "
                        "another --score; paper = p(n+1); the run stored every rule's threshold)")
    p.add_argument("--resize", action="store_true",
                   help="for a run on your own data (--train): resize inputs to the run's image size "
                        "(otherwise an input of another size is refused)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network precision: fp32 (default: the run's own scores), bf16 (2-3x faster on CPUs "
                        "with AMX; AUROC moves by up to ~0.1 point, benchmarks/RESULTS.md), or auto (bf16 where "
                        "the CPU has AMX or the GPU supports it, else fp32)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=_cmd_score)
    return p
