"""Probe a finished MNIST run on image families no run, rule or selection here has ever used.

A report, not a selection: nothing is chosen on these images (the recommended score was fixed by
docs/protocol.md before this probe existed).  Each family is made here from a seed, so anyone can
rebuild it:

* ``letters``: the 26 capital Latin letters drawn with PIL's built-in bitmap font, scaled to fill a
  20 x 20 box, shifted at random by up to 3 pixels, white on black (an EMNIST-letters stand-in);
* ``shapes``: outlined circles, rectangles and triangles of random size and stroke width;
* ``scribbles``: 2-5 random line segments of stroke width 2-3 (strokes without a character);
* ``rotated-digits``: MNIST test digits turned 90 degrees (their pixel statistics are MNIST's);
* ``shifted-digits``: MNIST test digits moved 9 pixels to a random side (cut at the border);
* ``smooth-noise``: uniform noise low-pass filtered and stretched to [0, 1] (blobs, no strokes);
* ``sparse-noise``: 5 % of the pixels lit at random (salt on black).

The digits used for the digit families are the second half of the MNIST test split; the
in-distribution images the AUROC is computed against are its first half.

    python -m experiments.probe_families --run runs/mnist-quick --out results/ablation/probe_families.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oodgen.config import RECOMMENDED
from oodgen.data import load
from oodgen.detectors.oodgen import SCORES
from oodgen.metrics import ood_metrics
from oodgen.score import load_detector
from oodgen.utils import atomic_write_json, environment

N = 1000
RULES = (RECOMMENDED,) + tuple(r for r in SCORES if r != RECOMMENDED)     # every shipped rule, the default first


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (28, 28), 0)
    return img, ImageDraw.Draw(img)


def letters(rng: np.random.Generator, n: int) -> np.ndarray:
    font = ImageFont.load_default()
    glyphs = []
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        img = Image.new("L", (16, 16), 0)
        ImageDraw.Draw(img).text((2, 1), c, fill=255, font=font)
        box = img.getbbox()
        glyphs.append(img.crop(box).resize((20, 20), Image.BILINEAR))
    out = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        img, _ = _canvas()
        dx, dy = rng.integers(-3, 4, 2)
        img.paste(glyphs[rng.integers(26)], (4 + int(dx), 4 + int(dy)))
        out[i] = np.asarray(img)
    return out


def _drawn(n: int, draw) -> np.ndarray:
    """``n`` 28 x 28 images, each drawn on a black canvas by ``draw(ImageDraw)``."""
    out = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        img, d = _canvas()
        draw(d)
        out[i] = np.asarray(img)
    return out


def shapes(rng: np.random.Generator, n: int) -> np.ndarray:
    def one(d: ImageDraw.ImageDraw) -> None:
        w = int(rng.integers(1, 4))
        x0, y0 = rng.integers(2, 12, 2)
        x1, y1 = rng.integers(16, 26, 2)
        kind = rng.integers(3)
        if kind == 0:
            d.ellipse((x0, y0, x1, y1), outline=255, width=w)
        elif kind == 1:
            d.rectangle((x0, y0, x1, y1), outline=255, width=w)
        else:
            d.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], outline=255, width=w)
    return _drawn(n, one)


def scribbles(rng: np.random.Generator, n: int) -> np.ndarray:
    def one(d: ImageDraw.ImageDraw) -> None:
        for _ in range(int(rng.integers(2, 6))):
            d.line(tuple(int(v) for v in rng.integers(3, 25, 4)), fill=255, width=int(rng.integers(2, 4)))
    return _drawn(n, one)


def rotated_digits(digits: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.rot90(digits[:n], k=1, axes=(1, 2)).copy()


def shifted_digits(digits: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros_like(digits[:n])
    for i, d in enumerate(digits[:n]):
        axis, sign = int(rng.integers(2)), int(rng.choice([-1, 1]))
        moved = np.roll(d, 9 * sign, axis=axis)
        cut = slice(0, 9) if sign > 0 else slice(19, 28)
        if axis == 0:
            moved[cut, :] = 0
        else:
            moved[:, cut] = 0
        out[i] = moved
    return out


def smooth_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.uniform(0, 1, (n, 28, 28))
    kernel = np.ones(5) / 5
    for axis in (1, 2):
        x = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, x)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    return np.round(255 * (x - lo) / (hi - lo)).astype(np.uint8)


def sparse_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return (255 * (rng.uniform(0, 1, (n, 28, 28)) < 0.05)).astype(np.uint8)


def families(seed: int = 0) -> dict[str, np.ndarray]:
    """{name: (N, 1, 28, 28) float32 in [0, 1]} of every family, rebuilt from ``seed``."""
    rng = np.random.default_rng(seed)
    test = load("mnist", "test").images[:, 0]
    digits = np.round(255 * test[len(test) // 2:]).astype(np.uint8)
    made = {"letters": letters(rng, N), "shapes": shapes(rng, N), "scribbles": scribbles(rng, N),
            "rotated-digits": rotated_digits(digits, rng, N), "shifted-digits": shifted_digits(digits, rng, N),
            "smooth-noise": smooth_noise(rng, N), "sparse-noise": sparse_noise(rng, N)}
    return {k: (v[:, None].astype(np.float32) / 255.0) for k, v in made.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished MNIST run folder (detector.pt)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pictures", default=None, help="optional PNG with 8 images of each family")
    a = ap.parse_args(argv)
    test = load("mnist", "test").images
    x_in = test[:len(test) // 2]
    fam = families(a.seed)
    if a.pictures:
        rows = [np.concatenate(list(v[:8, 0]), axis=1) for v in fam.values()]
        Image.fromarray(np.round(255 * np.concatenate(rows, axis=0)).astype(np.uint8)).save(a.pictures)
    doc = {"run": str(a.run), "run_config": load_detector(a.run).config_, "seed": a.seed, "n_in": len(x_in),
           "n_per_family": N, "auroc": {}, "fpr95": {}}
    for rule in RULES:
        det = load_detector(a.run, rule)
        s_in = det.score(x_in)
        doc["auroc"][rule], doc["fpr95"][rule] = {}, {}
        for name, x in fam.items():
            m = ood_metrics(s_in, det.score(x))
            doc["auroc"][rule][name], doc["fpr95"][rule][name] = m["auroc"], m["fpr95"]
        print(rule, {k: round(v, 1) for k, v in doc["auroc"][rule].items()}, flush=True)
    doc.update(command="python -m experiments.probe_families " + " ".join(sys.argv[1:] if argv is None else argv),
               environment=environment())
    atomic_write_json(Path(a.out), doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
