"""Confident classifier: a classifier trained jointly with a GAN whose samples it must find
uncertain (Lee, Lee, Lee & Shin, ICLR 2018).

Training alternates, per batch of in-distribution images (x, y) and noise z ~ N(0, I):

1. discriminator D:  BCE(D(x), real) + BCE(D(G(z)), fake);
2. generator G:      BCE(D(G(z)), real) + beta * KL(U || p(y | G(z)))   (samples on the
   boundary of the data: realistic for D, uncertain for the classifier);
3. classifier C:     CE(C(x), y) + beta * KL(U || p(y | G(z')))          (fresh z').

KL(U || p) = sum_k (1/K) log((1/K) / p_k), averaged over the batch (the reference code's
``F.kl_div(log_softmax, uniform) * K``).  Optimisers: Adam lr 2e-4 for all three, betas
(0.5, 0.999) for G and D and PyTorch's default betas for C, no weight decay; every lr drops
x0.1 after ``lr_drop_at`` of the epochs (the reference: epoch 60 of 100).

Score (higher = more OOD): ``s(x) = 1 - max_k softmax(C(x))_k``.

Networks.  The reference code is a 32x32 DCGAN; for 28x28 grey images we use a DCGAN of the
same design sized for 28x28 (the authors' own 28x28 Keras GAN starts from a 7x7x128 map too;
G and D live in :mod:`oodgen.models.dcgan`):

* G: z (100) -> ConvT 7x7 -> 7x7x128, BN, ReLU -> ConvT 4x4 s2 -> 14x14x64, BN, ReLU ->
  ConvT 4x4 s2 -> 28x28x1, sigmoid (images in [0, 1] like the data);
* D: Conv 4x4 s2 -> 14x14x64, LeakyReLU 0.2 -> Conv 4x4 s2 -> 7x7x128, BN, LeakyReLU 0.2 ->
  linear -> one logit;
* weights N(0, 0.02), BatchNorm scales N(1, 0.02) (DCGAN init);
* C: the Fig. 6c CNN with n outputs (or the ``model`` passed in, copied, as the initial
  classifier).

Training is resumable: with ``checkpoint_path`` all three networks, their optimisers and the
history are saved atomically after every epoch, and each epoch's randomness is derived from
(seed, epoch), so an interrupted run resumes to the same result.

Hyper-parameters (defaults): ``beta`` 1.0 (the reference's SVHN value; 0.1 for CIFAR-10),
``epochs`` 100, ``batch_size`` 128, ``lr`` 2e-4, ``nz`` 100, ``lr_drop_at`` 0.6, ``seed`` 0,
``device`` "cpu", ``checkpoint_path`` None, ``verbose`` False.

Reference: K. Lee, H. Lee, K. Lee, J. Shin, "Training confidence-calibrated classifiers for
detecting out-of-distribution samples", ICLR 2018 (code: ``alinlab/Confident_classifier``).
Table 1 of the OODGen paper ("Confident-Classifier").
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init
from ..utils import atomic_torch_save, derive_seed, generator, resolve_device
from .base import Detector, InputError, BenchInfo
from .posthoc import softmax

CHECKPOINT_FORMAT = "oodgen-confident/1"


def kl_from_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(U || softmax(logits)) per sample, averaged over the batch."""
    k = logits.shape[1]
    return (-math.log(k) - F.log_softmax(logits, dim=1).mean(dim=1)).mean()


class ConfidentClassifier(Detector):
    """Classifier trained jointly with a boundary-sample GAN; score 1 - max softmax."""

    bench_info = BenchInfo("Confident", "table1", "trains", "1 - max softmax of the jointly trained classifier")

    @classmethod
    def for_bench_training(cls, seed: int, epochs: int, device: str, checkpoint_path: str, *,
                           plain=None) -> "ConfidentClassifier":
        """The instance ``oodgen bench`` trains (resumable from ``checkpoint_path``) for ``epochs`` of
        its reference schedule; ``plain`` (the plain classifier's budget) does not apply to it."""
        return cls(beta=1.0, epochs=epochs, seed=seed, device=device, checkpoint_path=checkpoint_path, verbose=True)

    def __init__(self, model: nn.Module | None = None, beta: float = 1.0, epochs: int = 100,
                 batch_size: int = 128, lr: float = 2e-4, nz: int = 100, lr_drop_at: float = 0.6,
                 seed: int = 0, device: str = "cpu", checkpoint_path: str | None = None,
                 verbose: bool = False):
        self.model = model
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.nz = nz
        self.lr_drop_at = lr_drop_at
        self.seed = seed
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.verbose = verbose

    def _check_params(self) -> None:
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 0):
            raise ValueError(f"confident classifier: epochs must be an integer >= 0, got {self.epochs!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 2):
            raise ValueError(f"confident classifier: batch_size must be an integer >= 2, got {self.batch_size!r}")
        if not self.beta >= 0 or not self.lr > 0 or not 0 <= self.lr_drop_at <= 1:
            raise ValueError("confident classifier: need beta >= 0, lr > 0 and 0 <= lr_drop_at <= 1, got "
                             f"beta={self.beta}, lr={self.lr}, lr_drop_at={self.lr_drop_at}")

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if y is None:
            raise InputError("ConfidentClassifier needs class labels: fit(x_train, y_train)")
        self._check_params()
        device = resolve_device(self.device)
        n_classes = int(y.max()) + 1
        torch.manual_seed(derive_seed(self.seed, "confident", "init"))
        if self.model is not None:
            clf = copy.deepcopy(self.model)
        else:
            from ..models import Fig6cCNN
            clf = Fig6cCNN(n_classes)
        clf = clf.to(device)
        with torch.no_grad():
            k = clf.eval()(x[:2].to(device)).shape[1]
        if k < n_classes:
            raise InputError(f"confident classifier: the model has {k} outputs but the labels have {n_classes} classes")
        gen, disc = DCGANGenerator(self.nz).to(device), DCGANDiscriminator().to(device)
        dcgan_init(gen)
        dcgan_init(disc)
        opt_c = torch.optim.Adam(clf.parameters(), lr=self.lr)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self.lr, betas=(0.5, 0.999))
        params = {"beta": float(self.beta), "epochs": int(self.epochs), "batch_size": int(self.batch_size),
                  "lr": float(self.lr), "nz": int(self.nz), "lr_drop_at": float(self.lr_drop_at),
                  "seed": int(self.seed), "n_classes": k, "n_train": len(x)}
        history = {"loss_d": [], "loss_g": [], "loss_c": [], "kl_fake": [], "seconds": []}
        start = 0
        path = Path(self.checkpoint_path) if self.checkpoint_path else None
        if path is not None and path.exists():
            state = _load(path)
            if state.get("params") != params:
                raise InputError(f"{path} holds a confident-classifier run with other settings "
                                 f"({state.get('params')}); use another path or delete it")
            for net, key in ((clf, "classifier"), (gen, "generator"), (disc, "discriminator")):
                net.load_state_dict(state[key])
            for opt, key in ((opt_c, "opt_c"), (opt_g, "opt_g"), (opt_d, "opt_d")):
                opt.load_state_dict(state[key])
            history, start = state["history"], state["epoch"]
            if start > 0:
                self._log(f"[confident] resuming after epoch {start}/{self.epochs} from {path}")
        x, y = x.to(device), y.to(device)
        drop_epoch = int(round(self.lr_drop_at * self.epochs))
        for epoch in range(start, self.epochs):
            torch.manual_seed(derive_seed(self.seed, "confident", epoch, "torch"))
            lr = self.lr * (0.1 if epoch >= drop_epoch else 1.0)
            for opt in (opt_c, opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
            t0 = time.perf_counter()
            sums = self._epoch(x, y, clf, gen, disc, opt_c, opt_g, opt_d, generator(self.seed, "confident", epoch),
                               device)
            for key, v in sums.items():
                history[key].append(v)
            history["seconds"].append(time.perf_counter() - t0)
            self._log(f"[confident] epoch {epoch + 1}/{self.epochs} D {sums['loss_d']:.3f} G {sums['loss_g']:.3f} "
                      f"C {sums['loss_c']:.3f} KL(fake) {sums['kl_fake']:.3f} ({history['seconds'][-1]:.0f} s)")
            if path is not None:
                atomic_torch_save({"format": CHECKPOINT_FORMAT, "params": params, "epoch": epoch + 1,
                                   "classifier": clf.state_dict(), "generator": gen.state_dict(),
                                   "discriminator": disc.state_dict(), "opt_c": opt_c.state_dict(),
                                   "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                                   "history": history}, path)
        for net in (clf, gen, disc):
            net.eval()
        self.classifier_, self.generator_, self.discriminator_ = clf, gen, disc
        self.history_ = history
        self.n_classes_ = k

    def _epoch(self, x, y, clf, gen, disc, opt_c, opt_g, opt_d, rng: torch.Generator, device) -> dict:
        n = len(x)
        perm = torch.randperm(n, generator=rng).to(device)
        bce = F.binary_cross_entropy_with_logits
        sums = {"loss_d": 0.0, "loss_g": 0.0, "loss_c": 0.0, "kl_fake": 0.0}
        for net in (clf, gen, disc):
            net.train()
        for i in range(0, n, self.batch_size):
            idx = perm[i:i + self.batch_size]
            if len(idx) < 2:          # BatchNorm cannot train on a single sample
                continue
            xb, yb = x[idx], y[idx]
            m = len(idx)
            ones, zeros = torch.ones(m, device=device), torch.zeros(m, device=device)
            # (1) discriminator
            fake = gen(torch.randn(m, self.nz, device=device))
            opt_d.zero_grad(set_to_none=True)
            loss_d = bce(disc(xb), ones) + bce(disc(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            # (2) generator: fool D and be uncertain for the classifier
            opt_g.zero_grad(set_to_none=True)
            loss_g = bce(disc(fake), ones) + self.beta * kl_from_uniform(clf(fake))
            loss_g.backward()
            opt_g.step()
            # (3) classifier: fit the data and be uncertain on fresh generated samples
            with torch.no_grad():
                fake = gen(torch.randn(m, self.nz, device=device))
            opt_c.zero_grad(set_to_none=True)
            kl = kl_from_uniform(clf(fake))
            loss_c = F.cross_entropy(clf(xb), yb) + self.beta * kl
            loss_c.backward()
            opt_c.step()
            for key, v in (("loss_d", loss_d), ("loss_g", loss_g), ("loss_c", loss_c), ("kl_fake", kl)):
                sums[key] += v.item() * m
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def logits(self, x) -> torch.Tensor:
        from .base import check_images
        if not getattr(self, "fitted_", False):
            from ..generate import NotFittedError
            raise NotFittedError("ConfidentClassifier is not fitted: call fit(x_train, y_train) first")
        x = check_images(x)
        clf = self.classifier_.eval()
        device = next(clf.parameters()).device
        return torch.cat([clf(x[i:i + 1000].to(device)).cpu() for i in range(0, len(x), 1000)])

    def _score(self, x: torch.Tensor) -> np.ndarray:
        return 1.0 - softmax(self.logits(x).double().numpy()).max(axis=1)

    def predict_class(self, x) -> np.ndarray:
        """Predicted class of each image (``predict`` labels OOD, PyOD's way)."""
        return self.logits(x).argmax(1).numpy()


def _load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint must not be silently used
        raise InputError(f"{path}: cannot read checkpoint ({exc}); delete it to retrain") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a confident-classifier checkpoint")
    return state
