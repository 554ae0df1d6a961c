"""Use a trained detector: load ``DIR/detector.pt``, read images from files, score them.

``oodgen run ... --out DIR`` leaves ``DIR/detector.pt``; this module turns it back into an
:class:`~oodgen.detectors.oodgen.OODGen` (the class ``fit`` returns) that scores new images (higher = more OOD) and calls them OOD or in-distribution
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
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .artifact import DETECTOR_FORMAT, DetectorFileError, read_detector  # noqa: F401 (re-exported)
from .data.images import (ARRAY_SHAPES, IMAGE_SIZE, IMAGE_SUFFIXES,  # noqa: F401 (re-exported)
                          load_inputs, load_shaped_inputs)
from .detectors.base import InputError  # noqa: F401 (re-exported)
from .detectors.oodgen import SCORES, OODGen, check_threshold
from .config import SCORE_ALIASES
from .models import PRECISIONS


def load_detector(run_dir: str | os.PathLike, rule: str | None = None, precision: str = "fp32") -> OODGen:
    """The :class:`~oodgen.detectors.oodgen.OODGen` that ``oodgen run`` (or ``OODGen.save``) wrote to
    ``run_dir`` (or a detector.pt path): :meth:`OODGen.load <oodgen.detectors.oodgen.OODGen.load>`.

    ``rule`` scores with another of the run's score rules than the one it reports (every rule's
    95 %-TPR threshold is stored; ``"recommended"`` and ``"paper"`` are resolved); default: the run's own.

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
    return OODGen.load(run_dir, rule, precision)


# ----------------------------------------------------------------------------- command line

RESULT_FIELDS = ("name", "score", "decision", "predicted_class")


def score_files(run_dir: str | os.PathLike, paths: Sequence[str | os.PathLike],
                threshold: float | None = None, rule: str | None = None, resize: bool = False,
                precision: str = "fp32") -> tuple[OODGen, list[dict[str, Any]], float]:
    """Score files with the detector of ``run_dir`` (by ``rule``, default the run's): (detector, one
    row per image, threshold used)."""
    det = load_detector(run_dir, rule, precision)
    images, names = load_inputs(paths, shape=det.image_shape_, resize=resize)
    t = det.threshold_ if threshold is None else check_threshold(threshold)
    scores, ood, pred = det.evaluate(images, t)
    rows = [{"name": n, "score": float(s), "decision": "ood" if o else "in", "predicted_class": int(c)}
            for n, s, o, c in zip(names, scores, ood, pred)]
    return det, rows, t


def write_results(path: str | os.PathLike, rows: list[dict[str, Any]], det: OODGen,
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
            "detector": str(det.path_),
            "score_rule": det.score_rule,
            "threshold": threshold,
            "threshold_rule": "score > threshold is OOD" + (
                "" if threshold == det.threshold_ else " (threshold given on the command line)"),
            "n_classes": det.n_classes_,
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
