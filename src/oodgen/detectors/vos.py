"""VOS: virtual outlier synthesis (Du, Wang, Cai & Li, ICLR 2022).

VOS synthesises outliers in the classifier's penultimate feature space instead of pixel space and
teaches the classifier's energy to reject them.  With the classifier split into features
``g(x)`` (the Fig. 6c CNN's Dense-128) and head ``h`` (``f = h(g(x))``, K classes), training
minimises, per batch (x, y),

    L = CE(f(x), y) + alpha * L_unc.

* **Queues.**  Each class keeps the latest ``queue_size`` features ``g(x)`` of its training images
  (first in, first out; filled from every batch, also during the warm-up).
* **Class Gaussians.**  Once every queue is full and the warm-up is over, every step fits
  N(mu_k, Sigma) to the queues: class means mu_k and one covariance shared by all classes,
  ``Sigma = (1/(K Q)) sum_k sum_i (g_i - mu_k)(g_i - mu_k)^T + 1e-4 I`` (the reference code's
  regularisation).
* **Virtual outliers.**  Per class, ``n_candidates`` features are drawn from N(mu_k, Sigma) and
  the ``n_select`` of lowest likelihood are kept: the tail of the class, where the classifier
  has seen no data.  With a shared covariance the likelihood falls with the Mahalanobis distance
  ``||z||`` of a draw ``v = mu_k + L z`` (``Sigma = L L^T``), so the kept draws are those of
  largest ``||z||``; they are drawn directly from that distribution (their chi-squared order
  statistics and uniform directions: :func:`virtual_outliers`), not by drawing all candidates.
* **Uncertainty loss.**  With the learned energy ``E_w(v) = -log sum_k relu(w_k) exp(h_k(v))``
  (per-class weights ``w``, initialised U(0, 1)), a logistic head ``sigma(a E_w + b)`` (slope ``a``
  initialised negative: lower energy = in-distribution, :class:`VOSNetwork`) is trained
  with binary cross-entropy to call the batch's in-distribution features in-distribution (label 1)
  and the virtual outliers out (label 0), averaged over both.  The virtual outliers pass through
  the classifier's head ``h``: for the Fig. 6c CNN that is dropout(0.5) and the last linear layer,
  so in training they get the same dropout as the data's features (the reference's Wide ResNet
  has no dropout there).

Score (higher = more OOD): the energy of the logits, ``s(x) = -logsumexp_k f_k(x)`` (the paper's
test score is the negative energy, an in-distribution score; its sign is flipped here).  The
learned weights ``w`` and the logistic head serve training only.

Defaults, and how the paper's are scaled to this project.  The classifier trains with the plain
classifier's budget (``full`` profile: 8 epochs, Adam lr 1e-3, batch 128, cosine schedule, the
same Fig. 6c CNN), so that VOS differs from the plain classifier only by the uncertainty loss:
with ``model=None`` it starts from the plain classifier's initialisation (seed + 2) and draws the
plain classifier's data order and dropout masks (``alpha=0`` trains exactly the plain
classifier; its energy score is the ``energy`` baseline, the control).

* ``start_fraction`` 0.4: the paper regularises from epoch 40 of 100 (CIFAR); the same fraction of
  8 epochs starts at epoch 4 (``round(0.4 * 8) = 3`` epochs of warm-up, the last 5 of 8 regularised:
  62.5 %, against the paper's 60 %).
* ``queue_size`` 1,000 per class, as the paper: 18 % of an MNIST class of ~5,400 training images
  (the paper's 1,000 of 5,000 per CIFAR-10 class is 20 %); ``n_candidates`` 10,000 draws per class,
  ``n_select`` 1 kept (the paper's), ``alpha`` 0.1 (the paper's loss weight).

Hyper-parameters (defaults): ``alpha`` 0.1, ``epochs`` 8, ``batch_size`` 128, ``lr`` 1e-3,
``optimizer`` "adam", ``schedule`` "cosine", ``start_fraction`` 0.4, ``queue_size`` 1000,
``n_candidates`` 10000, ``n_select`` 1, ``seed`` 0, ``device`` "cpu", ``checkpoint_path`` None,
``verbose`` False.  ``model``: the initial classifier (copied; it needs ``features`` and ``head``),
or None for a fresh Fig. 6c CNN.

Training is resumable: with ``checkpoint_path`` the network, the energy weights, the logistic head,
the queues, the optimiser and the history are saved after every epoch (:func:`oodgen.train.fit_epochs`),
and each epoch's randomness is derived from (seed, epoch), so an interrupted run resumes to the same
result.

Reference: X. Du, Z. Wang, M. Cai, Y. Li, "VOS: Learning what you don't know by virtual outlier
synthesis", ICLR 2022 (code: ``deeplearning-wisc/vos``).  Not in the OODGen paper; an extra modern
baseline that synthesises its outliers in feature space where the paper generates them in pixel space.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Stage
from ..metrics import ood_metrics
from ..train import fit_epochs, predict_logits
from ..utils import generator, resolve_device
from .base import BenchInfo, Detector, InputError, check_images
from .posthoc import logsumexp

COVARIANCE_EPS = 1e-4        # added to the shared covariance's diagonal (the reference code's value)
N_DIAGNOSTIC = 50            # virtual outliers per class drawn after training for virtual_outlier_auroc


def class_gaussians(queue: torch.Tensor, eps: float = COVARIANCE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means (K, D) and the lower Cholesky factor (D, D) of the covariance shared by all
    classes, fitted to per-class features ``queue`` of shape (K, Q, D)."""
    means = queue.mean(dim=1)
    centred = (queue - means[:, None]).reshape(-1, queue.shape[-1])
    cov = (centred.T @ centred / len(centred)).double()       # float32 product: the cost of every step
    cov += eps * torch.eye(queue.shape[-1], dtype=torch.float64, device=queue.device)
    return means, torch.linalg.cholesky(cov).to(queue.dtype)


def tail_sq_norms(n_candidates: int, n_select: int, dim: int, n_sets: int, rng: torch.Generator) -> torch.Tensor:
    """Squared norms ``||z||^2`` of the ``n_select`` largest of ``n_candidates`` draws z ~ N(0, I_dim),
    largest first, for ``n_sets`` independent sets: float64 (n_sets, n_select).

    Exactly distributed as drawing every candidate and sorting, at the cost of ``n_select`` draws:
    ``||z||^2`` is chi-squared with ``dim`` degrees of freedom, and the survival probabilities
    ``q_(1) < q_(2) < ...`` of the largest draws are the smallest order statistics of ``n_candidates``
    uniforms, ``1 - q_(k) = prod_{j <= k} V_j^(1 / (n_candidates - j + 1))`` with V_j ~ U(0, 1)."""
    from scipy.special import gammainccinv
    v = torch.rand(n_sets, n_select, generator=rng, dtype=torch.float64).clamp_min(1e-300)
    left = n_candidates - torch.arange(n_select, dtype=torch.float64)
    q = -torch.expm1(torch.cumsum(torch.log(v) / left, dim=1))
    return torch.from_numpy(2.0 * gammainccinv(dim / 2.0, q.numpy()))


def virtual_outliers(means: torch.Tensor, cholesky: torch.Tensor, n_candidates: int, n_select: int,
                     rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_select`` lowest-likelihood of ``n_candidates`` draws from N(mu_k, L L^T) per class.

    Returns the virtual outliers (K * n_select, D) and their classes (K * n_select,).  All classes
    share L, so a draw ``mu_k + L z`` is the less likely the larger ``||z||``: the kept draws are those
    of largest norm.  Their norms come from :func:`tail_sq_norms` and their directions, independent
    of the norms, are uniform on the sphere; the same distribution as drawing all ``n_candidates``
    and sorting (tests/test_vos.py compares the two), without the K x n_candidates x D draws, which
    would cost more than the classifier's own training step."""
    k, d = means.shape
    sq_norms = tail_sq_norms(n_candidates, n_select, d, k, rng).reshape(k, n_select, 1)
    directions = torch.randn(k, n_select, d, generator=rng, dtype=torch.float64)
    z = directions / directions.norm(dim=-1, keepdim=True) * sq_norms.sqrt()
    samples = means[:, None] + z.to(means.device, means.dtype) @ cholesky.T
    labels = torch.arange(k, device=means.device).repeat_interleave(n_select)
    return samples.reshape(-1, d), labels


def weighted_energy(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """VOS's learned energy ``-log sum_k relu(w_k) exp(logits_k)`` (stable for large logits)."""
    top = logits.max(dim=1, keepdim=True).values
    total = (F.relu(weights) * torch.exp(logits - top)).sum(dim=1)
    return -(top.squeeze(1) + torch.log(total.clamp_min(torch.finfo(logits.dtype).tiny)))


def logistic_direction(net: "VOSNetwork") -> dict:
    """The learned logistic head ``sigma(a E + b)`` and the direction it taught: its slope is learned (it
    starts negative) and with ``a > 0`` the uncertainty loss rewards *higher* energy on in-distribution
    features than on the virtual outliers, the opposite of what the test score assumes."""
    a, b = float(net.logistic.weight.detach().reshape(-1)[0]), float(net.logistic.bias.detach().reshape(-1)[0])
    return {"slope": a, "intercept": b,
            "direction": "in-distribution = lower energy (as scored)" if a < 0
            else "in-distribution = higher energy: the energy score is taught the wrong way round"}


class VOSNetwork(nn.Module):
    """A classifier (``features`` and ``head``) with what VOS trains beside it: the energy weights,
    the logistic head and the per-class feature queues (buffers, so a checkpoint holds them)."""

    def __init__(self, classifier: nn.Module, n_classes: int, n_features: int, queue_size: int,
                 rng: torch.Generator):
        super().__init__()
        self.classifier = classifier
        # seeded here, not from the global generator: the same seed gives the same detector
        self.energy_weights = nn.Parameter(torch.rand(n_classes, generator=rng))
        self.logistic = nn.Linear(1, 1)
        with torch.no_grad():                     # PyTorch's default for one input: U(-1, 1) ...
            for p in self.logistic.parameters():
                p.copy_(torch.rand(p.shape, generator=rng) * 2 - 1)
            # ... but the slope starts negative: lower energy = in-distribution, the direction of VOS's
            # uncertainty loss (its phi keeps the energy's order) and of the energy score it is tested with.
            # A random sign decides the direction the head teaches (it keeps its starting sign), and a
            # positive start inverted the score (MNIST 0-4 / F-MNIST 0-4 seed 0: AUROC 41 / 19.5).
            self.logistic.weight.copy_(-self.logistic.weight.abs())
        self.register_buffer("queue", torch.zeros(n_classes, queue_size, n_features))
        self.register_buffer("n_seen", torch.zeros(n_classes, dtype=torch.long))   # features enqueued per class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add features to their classes' queues (a ring: the oldest is overwritten)."""
        q = self.queue.shape[1]
        for c in labels.unique().tolist():
            new = features[labels == c][-q:]
            slots = (self.n_seen[c] + torch.arange(len(new), device=new.device)) % q
            self.queue[c, slots] = new.to(self.queue.dtype)
            self.n_seen[c] += len(new)

    def queues_full(self) -> bool:
        return bool((self.n_seen >= self.queue.shape[1]).all())

    def step_loss(self, x: torch.Tensor, y: torch.Tensor, alpha: float, n_candidates: int, n_select: int,
                  rng: torch.Generator, regularise: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One training step's loss on a batch: cross-entropy, the batch's features enqueued, and,
        when ``regularise`` and every queue is full, ``alpha`` x the uncertainty loss on virtual
        outliers of the updated queues.  Returns (loss, uncertainty loss or None)."""
        features = self.classifier.features(x)
        logits = self.classifier.head(features)
        loss = F.cross_entropy(logits, y)
        self.enqueue(features.detach(), y)
        if not (regularise and self.queues_full()):
            return loss, None
        means, chol = class_gaussians(self.queue)
        virtual, _ = virtual_outliers(means, chol, n_candidates, n_select, rng)
        unc = self.uncertainty_loss(logits, virtual)
        return loss + alpha * unc, unc

    def uncertainty_loss(self, logits_in: torch.Tensor, virtual: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the logistic head on the learned energy: in-distribution (1)
        against virtual outliers (0), averaged over both."""
        energy = torch.cat([weighted_energy(logits_in, self.energy_weights),
                            weighted_energy(self.classifier.head(virtual), self.energy_weights)])
        target = torch.cat([torch.ones(len(logits_in), device=energy.device),
                            torch.zeros(len(virtual), device=energy.device)])
        return F.binary_cross_entropy_with_logits(self.logistic(energy[:, None]).squeeze(1), target)


class VOS(Detector):
    """Classifier regularised with virtual outliers from its class-conditional feature Gaussians;
    score: the energy -logsumexp(logits)."""

    bench_info = BenchInfo("VOS", "extra", "trains",
                           "-logsumexp(logits) of the classifier trained with virtual outliers (VOS)")
    #: The loss weight :meth:`for_bench_training` uses (the control subclass sets 0).
    bench_alpha = 0.1

    @classmethod
    def for_bench_training(cls, seed: int, epochs: int, device: str, checkpoint_path: str, *,
                           plain: Stage) -> "VOS":
        """The instance ``oodgen bench`` trains: the plain classifier's budget ``plain`` (the run's
        profile); ``epochs`` (the confident classifier's own schedule) does not apply."""
        return cls(alpha=cls.bench_alpha, epochs=plain.epochs, batch_size=plain.batch_size, lr=plain.lr,
                   optimizer=plain.optimizer, schedule=plain.schedule, seed=seed, device=device,
                   checkpoint_path=checkpoint_path, verbose=True)

    def __init__(self, model: nn.Module | None = None, alpha: float = 0.1, epochs: int = 8, batch_size: int = 128,
                 lr: float = 1e-3, optimizer: str = "adam", schedule: str = "cosine", start_fraction: float = 0.4,
                 queue_size: int = 1000, n_candidates: int = 10000, n_select: int = 1, seed: int = 0,
                 device: str = "cpu", checkpoint_path: str | None = None, verbose: bool = False):
        self.model = model
        self.alpha = alpha
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.schedule = schedule
        self.start_fraction = start_fraction
        self.queue_size = queue_size
        self.n_candidates = n_candidates
        self.n_select = n_select
        self.seed = seed
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.verbose = verbose

    def _check_params(self) -> None:
        for name in ("epochs", "batch_size", "queue_size", "n_candidates", "n_select"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= (0 if name == "epochs" else 1)):
                raise ValueError(f"VOS: {name} must be a positive integer, got {v!r}")
        if not self.n_select <= self.n_candidates:
            raise ValueError(f"VOS: n_select ({self.n_select}) must be <= n_candidates ({self.n_candidates})")
        if not (self.alpha >= 0 and self.lr > 0 and 0 <= self.start_fraction <= 1):
            raise ValueError("VOS: need alpha >= 0, lr > 0 and 0 <= start_fraction <= 1, got "
                             f"alpha={self.alpha}, lr={self.lr}, start_fraction={self.start_fraction}")

    @property
    def start_epoch(self) -> int:
        """The first regularised epoch, 0-based (``round(start_fraction * epochs)``)."""
        return int(round(self.start_fraction * self.epochs))

    def _fit(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if y is None:
            raise InputError("VOS needs class labels: fit(x_train, y_train)")
        self._check_params()
        device = resolve_device(self.device)
        n_classes = int(y.max()) + 1
        if self.model is not None:
            clf = copy.deepcopy(self.model)
        else:
            from ..models import Fig6cCNN
            torch.manual_seed(self.seed + 2)      # the plain classifier's initialisation (oodgen.run)
            clf = Fig6cCNN(n_classes, x.shape[1], tuple(x.shape[2:]))
        if not (hasattr(clf, "features") and hasattr(clf, "head")):
            raise InputError(f"VOS: {type(clf).__name__} has no features()/head(); VOS needs the penultimate features")
        clf = clf.to(device)
        with torch.no_grad():
            n_features = clf.eval().features(x[:2].to(device)).shape[1]
            k = clf.head(clf.features(x[:2].to(device))).shape[1]
        if k < n_classes:
            raise InputError(f"VOS: the model has {k} outputs but the labels have {n_classes} classes")
        net = VOSNetwork(clf, k, n_features, self.queue_size, generator(self.seed, "vos", "init")).to(device)
        stage = Stage(self.epochs, self.optimizer, self.lr, self.batch_size, self.schedule)
        x, y = x.to(device), y.to(device)
        n, steps = len(x), math.ceil(len(x) / self.batch_size)
        # per epoch: mean uncertainty loss over its regularised steps (NaN: none); a buffer, so it is checkpointed
        net.register_buffer("uncertainty_by_epoch", torch.full((self.epochs,), float("nan")))

        def epoch_fn(epoch, rng, opt, sched):
            perm = torch.randperm(n, generator=rng)
            regularise = self.alpha > 0 and epoch >= self.start_epoch
            total, unc_sum, unc_steps = 0.0, 0.0, 0
            for i in range(steps):
                idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
                loss, unc = net.step_loss(x[idx], y[idx], self.alpha, self.n_candidates, self.n_select, rng,
                                          regularise)
                if unc is not None:
                    unc_sum, unc_steps = unc_sum + unc.item(), unc_steps + 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if unc_steps:
                net.uncertainty_by_epoch[epoch] = unc_sum / unc_steps
            return total / n

        self._log(f"[vos] alpha {self.alpha}: uncertainty loss from epoch {self.start_epoch + 1}/{self.epochs}, "
                  f"queue {self.queue_size} per class, {self.n_select} of {self.n_candidates} draws kept per class"
                  if self.alpha > 0 else "[vos] alpha 0: the control, no uncertainty loss")
        history = fit_epochs("vos", net, stage, steps, epoch_fn, self.checkpoint_path, self.seed, self._log,
                             rng_stage="plain")
        net.eval()
        if self.alpha > 0 and torch.isnan(net.uncertainty_by_epoch).all():
            self._log(f"[vos] warning: the queues of {self.queue_size} features per class never filled "
                      "(too few training images or epochs): no virtual outliers, no uncertainty loss")
        self.network_ = net
        self.classifier_ = clf
        self.n_classes_ = k
        self.history_ = {**history, "uncertainty_loss": [None if math.isnan(v) else v
                                                         for v in net.uncertainty_by_epoch.tolist()],
                         "regularised_from_epoch": self.start_epoch + 1,
                         "virtual_outlier_auroc": self._virtual_outlier_auroc(),
                         "logistic_head": logistic_direction(net)}

    @torch.no_grad()
    def _virtual_outlier_auroc(self) -> float | None:
        """AUROC (percent) of the test energy separating the queued training features from fresh
        virtual outliers of the final queues; None if the queues never filled."""
        net = self.network_
        if not net.queues_full():
            return None
        means, chol = class_gaussians(net.queue)
        rng = generator(self.seed, "vos", "diagnostic")
        virtual = torch.cat([virtual_outliers(means, chol, self.n_candidates, self.n_select, rng)[0]
                             for _ in range(math.ceil(N_DIAGNOSTIC / self.n_select))])
        head = self.classifier_.head
        energy_in = -torch.logsumexp(head(net.queue.reshape(-1, net.queue.shape[-1])), dim=1)
        energy_out = -torch.logsumexp(head(virtual), dim=1)
        return ood_metrics(energy_in.double().cpu().numpy(), energy_out.double().cpu().numpy())["auroc"]

    def _logits(self, x: torch.Tensor) -> np.ndarray:
        return predict_logits(self.classifier_, x, batch_size=1000).double().numpy()

    def _score(self, x: torch.Tensor) -> np.ndarray:
        return -logsumexp(self._logits(x))

    def predict_class(self, x) -> np.ndarray:
        """Predicted class of each image (``predict`` labels OOD, PyOD's way)."""
        self.check_fitted()
        return self._logits(check_images(x, "predict_class input", shape=self.input_shape())).argmax(1)


class VOSControl(VOS):
    """VOS's control: the same training with the uncertainty loss off (``alpha = 0``), scored by the
    same energy; what is left of VOS's gain when the energy score alone is credited."""

    bench_info = BenchInfo("VOS α=0", "extra", "trains",
                           "-logsumexp(logits) of the classifier trained like VOS with alpha = 0 (control)")
    bench_alpha = 0.0
