"""Beyond the paper: per-image statistics that ``reject+fisher`` combines with the classifier's.

Two come from the method's own generator (the CVAE):

* ``nll``: the CVAE's negative log-likelihood bound of an image, in bits, given the class the
  n+1 classifier predicts for it: the summed Bernoulli cross-entropy of its reconstruction
  (decoded at the encoder mean) plus 0.5 * ||mu||^2 (the KL term up to constants).  Inputs the
  CVAE cannot reconstruct (noise, letters, anything complex) get a high value.
* ``nll-complexity``: ``nll`` minus the image's length in bits under a generic lossless
  compressor (zlib, level 9, of the 8-bit pixels), the input-complexity correction of Serra et
  al., "Input complexity and out-of-distribution detection with likelihood-based generative
  models" (ICLR 2020).  A likelihood alone rates *simple* foreign images (MNIST digits or
  Omniglot strokes seen by a Fashion-MNIST model: mostly black background) as likely; the
  difference asks how much better the in-distribution model explains the image than a model
  that knows nothing about the data does, which such images fail.

The third looks at the image itself:

* ``pixel-knn``: the distance of the L2-normalised image to its k-th nearest L2-normalised
  training image (:class:`PixelBank`, a fixed random subset of :data:`PIXEL_BANK_SIZE` training
  images searched with k scaled from k = 50 in a bank of 30,000: k = 8 for 5,000).  The size
  was chosen on validation images and generated outliers only (``experiments/choose_banks.py``,
  ``results/ablation/bank_choice.json``); detector files written with the older 30,000-image bank
  keep it, and their stored calibration matches it.  The classifier's features discard what it does not need to tell the classes
  apart; this keeps it (e.g. Omniglot's thin strokes, which an MNIST classifier maps near digits).

All are higher = more OOD.  They are combined with the classifier's scores in
:mod:`oodgen.detectors.fusion` (rule ``"reject+fisher"``).
"""
from __future__ import annotations

import math
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .knn import KNN, kth_largest

STATS = ("nll", "nll-complexity", "pixel-knn")
CLASS_STAT = "class-pixel-knn"   # the class-conditional pixel distance (ClassPixelBank): the recommended guard's
REFERENCE_BANK = 30000      # the first pixel bank: 30,000 images searched with k = PIXEL_K
PIXEL_K = 50
PIXEL_BANK_SIZE = 5000      # chosen by experiments/choose_banks.py (results/ablation/bank_choice.json)
CVAE_BATCH = 256            # faster on 2 CPU cores than 1000 (cache-resident activations)


def scaled_k(k_full: int, size: int, full_size: int) -> int:
    """k for a bank of ``size`` that estimates the same neighbour-distance quantile as ``k_full`` in
    a bank of ``full_size`` (Sun et al. 2022 scale k with the sampled fraction of the bank)."""
    return max(1, int(round(k_full * size / full_size)))


def _compressed_bits(rows: np.ndarray) -> list[float]:
    return [8.0 * len(zlib.compress(r.tobytes(), 9)) for r in rows]


def complexity_bits(x: torch.Tensor, workers: int | None = None) -> np.ndarray:
    """zlib (level 9) length in bits of each image's 8-bit pixels, float64 (N,).

    zlib releases the GIL while it compresses, so chunks of images run on ``workers`` threads
    (default: torch's intra-op thread count)."""
    q = torch.clamp(torch.round(x.detach().to("cpu", torch.float32) * 255.0), 0, 255).to(torch.uint8)
    rows = q.reshape(len(q), -1).numpy()
    workers = max(1, workers or torch.get_num_threads())
    if workers == 1 or len(rows) < 256:
        return np.array(_compressed_bits(rows), dtype=np.float64)
    chunks = np.array_split(rows, workers)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(_compressed_bits, chunks))
    return np.array([b for part in parts for b in part], dtype=np.float64)


@torch.no_grad()
def cvae_nll_bits(cvae, x: torch.Tensor, labels: torch.Tensor, batch_size: int = CVAE_BATCH) -> np.ndarray:
    """Reconstruction cross-entropy + 0.5 ||mu||^2 of each image under ``cvae`` with ``labels``, in bits."""
    was_training = cvae.training
    cvae.eval()
    device = next(cvae.parameters()).device
    out = []
    try:
        for i in range(0, len(x), batch_size):
            b = x[i:i + batch_size].to(device, torch.float32)
            yb = labels[i:i + batch_size].to(device)
            mu, _ = cvae.encode(b.contiguous(memory_format=torch.channels_last), yb)
            # a bf16 inference copy's last (transposed) convolution returns bf16: the loss is float32
            logits = cvae.decoder.logits(mu, cvae.onehot(yb)).float()
            # Inputs outside [0, 1] (e.g. the unclipped sphere set) are scored against their clipped
            # version; the cross-entropy needs targets in [0, 1].
            rec = F.binary_cross_entropy_with_logits(logits, b.clamp(0, 1), reduction="none").flatten(1).sum(1)
            out.append((rec + 0.5 * mu.pow(2).sum(1)).double().cpu())
    finally:
        cvae.train(was_training)
    return (torch.cat(out).numpy() / math.log(2.0)) if out else np.zeros(0)


class PixelBank:
    """k-th nearest-neighbour distance among L2-normalised training images (stored as 8-bit pixels)."""

    def __init__(self, images: torch.Tensor, k: int = PIXEL_K):
        imgs = torch.as_tensor(images)
        if imgs.dtype != torch.uint8:
            imgs = torch.clamp(torch.round(imgs.to(torch.float32) * 255.0), 0, 255).to(torch.uint8)
        self.images = imgs.reshape(len(imgs), -1).contiguous()
        self.k = k
        self._knn = KNN(None, k=k).fit_outputs(features=self.images.to(torch.float32).numpy())

    @classmethod
    def from_training_set(cls, x: torch.Tensor, seed: int, size: int = PIXEL_BANK_SIZE,
                          k: int | None = None) -> "PixelBank":
        """A fixed random subset of at most ``size`` training images (seeded; a smaller bank is a
        subset of a larger one with the same seed).  ``k`` defaults to :func:`scaled_k` of
        :data:`PIXEL_K` from a bank of min(:data:`REFERENCE_BANK`, len(x)) images, at most the bank's size."""
        size = min(int(size), len(x))
        if k is None:       # at most the whole bank (a tiny training set: oodgen.preflight says so)
            k = min(scaled_k(PIXEL_K, size, min(REFERENCE_BANK, len(x))), size)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size]
        return cls(torch.as_tensor(x)[idx.sort().values].cpu(), k)

    def distance(self, x: torch.Tensor) -> np.ndarray:
        flat = torch.as_tensor(x).detach().to("cpu", torch.float32).reshape(len(x), -1).numpy()
        return self._knn.score_outputs(features=flat)

    def self_distances(self, batch_size: int = 1000) -> np.ndarray:
        """Leave-one-out distances: each bank image's distance to its k-th nearest *other* bank image
        (the (k+1)-th largest similarity, its own being the largest), float64 (n,)."""
        n = len(self.images)
        if n <= self.k:
            raise ValueError(f"PixelBank.self_distances: a bank of {n} images has no k-th other neighbour (k={self.k})")
        bank = self._knn.bank_
        out = np.empty(n, dtype=np.float64)
        for i in range(0, n, batch_size):
            kth = kth_largest(bank[i:i + batch_size] @ bank.T, self.k + 1).double()
            out[i:i + len(kth)] = torch.sqrt((2.0 - 2.0 * kth).clamp_min(0.0)).numpy()
        return out

    def state_dict(self) -> dict:
        return {"images": self.images, "k": int(self.k)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PixelBank":
        return cls(state["images"], int(state["k"]))



class ClassPixelBank:
    """Class-conditional :class:`PixelBank`: one bank per class, each a seeded subset of at most ``size``
    of that class's training images searched with k scaled from :data:`PIXEL_K` in
    :data:`REFERENCE_BANK` (8 for 5,000).  :meth:`distance` measures each image against the bank of the
    class given for it (the class the classifier predicts): a candidate of ``docs/protocol.md``, round 3."""

    def __init__(self, banks: dict[int, PixelBank]):
        if not banks:
            raise ValueError("ClassPixelBank needs at least one class")
        self.banks = dict(banks)

    @classmethod
    def from_training_set(cls, x: torch.Tensor, y, seed: int, size: int = PIXEL_BANK_SIZE) -> "ClassPixelBank":
        x = torch.as_tensor(x)
        y = np.asarray(torch.as_tensor(y)).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"ClassPixelBank: {len(x)} images but {len(y)} labels")
        banks = {}
        for c in np.unique(y):
            rows = torch.from_numpy(np.flatnonzero(y == c))
            n = min(int(size), len(rows))
            k = min(scaled_k(PIXEL_K, n, REFERENCE_BANK), n)
            banks[int(c)] = PixelBank.from_training_set(x[rows], seed + int(c), n, k)
        return cls(banks)

    def distance(self, x: torch.Tensor, labels) -> np.ndarray:
        labels = np.asarray(torch.as_tensor(labels)).reshape(-1)
        if len(labels) != len(x):
            raise ValueError(f"ClassPixelBank.distance: {len(x)} images but {len(labels)} labels")
        unknown = sorted(set(np.unique(labels).tolist()) - set(self.banks))
        if unknown:
            raise ValueError(f"ClassPixelBank.distance: no bank for class(es) {unknown}")
        out = np.empty(len(x), dtype=np.float64)
        x = torch.as_tensor(x)
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            out[rows] = self.banks[int(c)].distance(x[torch.from_numpy(rows)])
        return out

    def loo_max(self) -> dict[int, float]:
        """Per class, the largest leave-one-out distance inside its bank (:meth:`PixelBank.self_distances`):
        the per-class scale of round 5's ``@bank-max`` candidate (docs/protocol.md).  A class whose bank has
        no k-th other neighbour (k >= its size) is left out."""
        return {c: float(b.self_distances().max()) for c, b in self.banks.items() if len(b.images) > b.k}

    def state_dict(self) -> dict:
        return {"classes": torch.tensor(sorted(self.banks), dtype=torch.int64),
                "banks": [self.banks[c].state_dict() for c in sorted(self.banks)]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ClassPixelBank":
        classes = [int(c) for c in state["classes"]]
        if len(classes) != len(state["banks"]):
            raise ValueError(f"{len(classes)} classes but {len(state['banks'])} banks")
        return cls({c: PixelBank.from_state_dict(b) for c, b in zip(classes, state["banks"])})


def image_stats(cvae, bank: PixelBank, x: torch.Tensor, labels: torch.Tensor,
                batch_size: int = CVAE_BATCH, only: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The :data:`STATS` of images ``x`` whose predicted classes are ``labels``.

    ``only``: a boolean mask; the statistics are computed for those images alone and the others
    get NaN (``reject+fisher`` needs none for the images the classifier rejects)."""
    if len(labels) != len(x):
        raise ValueError(f"image_stats: {len(x)} images but {len(labels)} labels")
    if only is not None:
        only = np.asarray(only, dtype=bool).reshape(-1)
        if len(only) != len(x):
            raise ValueError(f"image_stats: {len(x)} images but a mask of {len(only)}")
        out = {k: np.full(len(x), np.nan) for k in STATS}
        if only.any():
            rows = torch.from_numpy(np.flatnonzero(only))
            part = image_stats(cvae, bank, torch.as_tensor(x)[rows], torch.as_tensor(labels)[rows], batch_size)
            for k in STATS:
                out[k][only] = part[k]
        return out
    nll = cvae_nll_bits(cvae, x, labels, batch_size)
    return {"nll": nll, "nll-complexity": nll - complexity_bits(x), "pixel-knn": bank.distance(x)}
