"""The paper's detector: an n+1-class classifier trained with generated boundary outliers.

Vernekar et al., "Out-of-distribution detection in classifiers via generation" (2019).
A conditional VAE is trained on the in-distribution data; Type I (off-manifold) outliers are
training images pushed along random directions of the left null space of the decoder's
Jacobian, Type II (on-manifold) outliers are decoded points of each class's 95 % Mahalanobis
ellipsoid in latent space; the Fig. 6c classifier is trained with one extra "OOD" class on them.

Scores (higher = more OOD):

* ``"ood-class"``: p(n+1 | x), the paper's OOD-class probability;
* ``"max-in"``: 1 - max_k p(k | x) over the n in-distribution classes (the paper's
  "in-distribution max probability", sign flipped); the authors use it for MNIST 0-4;
* ``"feature-knn+pixel-guard@max"`` (beyond the paper; the recommended score,
  :data:`oodgen.config.RECOMMENDED`): ``feature-knn`` below, except that images farther in pixel
  space than every calibration image rank first (:mod:`oodgen.detectors.fusion`);
* ``"feature-knn"`` (beyond the paper): the k-th nearest training feature's distance in the same
  classifier's penultimate layer;
* ``"ood-class+knn"`` (beyond the paper): p(n+1) fused with the KNN distance in the same
  classifier's penultimate features (:mod:`oodgen.detectors.fusion`).  ``fit`` calibrates the
  fused rules on 5,000 training images, whatever the detector's own score, so that every rule
  (:meth:`OODGen.score_all`) works after it; ``oodgen run`` recalibrates on its held-out validation split;
* ``"reject+knn"`` (beyond the paper): images with p(n+1) > 0.5 first, the others ranked by that
  KNN distance (no calibration needed);
* ``"reject+fisher"`` (beyond the paper): images with p(n+1) > 0.5 first, the others ranked by
  Fisher's combination of the in-distribution p-values of that KNN distance and of three image
  statistics (the CVAE's likelihood, that likelihood against zlib's code length, a pixel-space
  KNN distance; :mod:`oodgen.detectors.image_stats`).  Calibrated like ``ood-class+knn``.

Hyper-parameters: ``latent_dim`` (8 MNIST, 10 F-MNIST), ``profile`` (training budget, see
:mod:`oodgen.config`), ``variant`` (paper vs authors'-code choices), ``score`` (default
``"recommended"``: :data:`oodgen.config.RECOMMENDED`, the winner of ``docs/protocol.md``;
``"paper"`` = p(n+1)), ``seed``; ``nplus1_seed`` (default None: ``seed``): the seed of the n+1
classifier's training alone (its initialisation, data order, dropout and outlier pools), so that it can
be trained again on the same CVAE, split and banks (the retraining-noise control of docs/protocol.md round 6);
``precision`` of scoring (``"fp32"`` default, ``"bf16"``, ``"auto"``;
:mod:`oodgen.models.inference`; training is always float32).
``fit`` measures the trained CVAE's health (``cvae_health_``, :mod:`oodgen.generate.health`),
prints it when ``verbose``; a collapsed CVAE is trained again from a fresh initialisation (seed
:func:`cvae_attempt_seed`) up to ``variant.cvae_retries`` times (every attempt is recorded in
``cvae_health_["attempts"]``); when the last one has collapsed too, it warns, and raises
:class:`~oodgen.generate.health.CollapsedCVAEError` when ``strict``.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..artifact import DetectorFileError, read_detector, write_detector
from ..config import PROFILES, SCORE_ALIASES, Profile, Variant, resolve_score
from ..metrics import threshold_at_tpr
from ..models import CVAE, Fig6cCNN
from ..generate import NotFittedError
from ..generate.health import check_health, cvae_health, health_line
from ..generate.panel import cached_panel
from ..train import OutlierPools, fit_ellipsoids, nplus1_monitor, predict_logits, train_cvae, train_nplus1
from ..utils import environment
from .base import THRESHOLD_TPR, Detector, check_images, check_labels
from .fusion import (CLASS_GUARD_RULE, FEATURE_RULE, GUARD_RULE, MIN_CALIBRATION, NEEDS_CLASS_PIXEL, NEEDS_PIXEL,
                     NEEDS_STATS, RULES as FUSION_RULES, FeatureKNNFusion, rejected)
from .image_stats import CLASS_STAT, ClassPixelBank, PixelBank, image_stats
from ..models.inference import inference_copy, resolve_precision
from .posthoc import model_outputs

SCORES = ("ood-class", "max-in") + FUSION_RULES
N_CALIBRATION = 5000
# what each CVAE attempt records (cvae_health["attempts"])
ATTEMPT_FIELDS = ("active_dims", "recon_ratio", "spread_ratio", "colour_ratio", "collapsed")


def cvae_attempt_seed(seed: int, attempt: int) -> int:
    """Seed of the CVAE's ``attempt``-th training (0: the run's own seed)."""
    return int(seed) + 7919 * int(attempt)


def nplus1_scores(logits: torch.Tensor, rule: str) -> np.ndarray:
    """OOD scores from n+1 logits: p(n+1) or 1 - max in-distribution probability."""
    p = torch.softmax(logits.double(), dim=1)
    if rule == "ood-class":
        return p[:, -1].numpy()
    if rule == "max-in":
        return (1.0 - p[:, :-1].max(dim=1).values).numpy()
    if rule in FUSION_RULES:
        raise ValueError(f"score {rule!r} needs the classifier's features too: use OODGen.score")
    raise ValueError(f"unknown score {rule!r}; use one of {SCORES}")


def rule_scores(rules, logits: torch.Tensor, features: np.ndarray | None = None,
                fusion: FeatureKNNFusion | None = None, stats: dict | None = None,
                dist: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The one scoring path of a trained n+1 run: ``{rule: scores}`` for each of ``rules`` (see
    :data:`SCORES`) from one classifier pass's ``logits`` (and penultimate ``features``), the fitted
    ``fusion`` and the images' ``stats`` where a rule needs them (``dist``: the feature-KNN distances
    when already computed).  Used by every :class:`OODGen` method that scores (fitted or loaded), so
    ``oodgen run``, ``oodgen score`` and the Python API always agree."""
    unknown = [r for r in rules if r not in SCORES]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; use any of {SCORES}")
    out = {r: nplus1_scores(logits, r) for r in rules if r not in FUSION_RULES}
    fused = [r for r in rules if r in FUSION_RULES]
    if fused:
        if fusion is None or (features is None and dist is None):
            raise ValueError(f"scores {fused} need the classifier's features and a fitted fusion")
        p_ood = out["ood-class"] if "ood-class" in out else nplus1_scores(logits, "ood-class")
        out.update(fusion.combine_all(fusion.distance(features) if dist is None else dist, p_ood, fused, stats))
    return out


def rule_needs(rule: str) -> tuple[bool, bool]:
    """(needs the classifier's features, needs the image statistics) for ``rule``."""
    return rule in FUSION_RULES, rule in NEEDS_STATS


def pixel_distances(pixel_bank: PixelBank | None, x: torch.Tensor) -> dict[str, np.ndarray]:
    """``{"pixel-knn": distances}`` of images ``x``: all the pixel guard needs (no CVAE pass, no zlib)."""
    if pixel_bank is None:
        raise NotFittedError("the pixel guard needs the pixel bank, which this detector lacks (a detector file "
                             "without it, or one whose stored bank is damaged)")
    return {"pixel-knn": pixel_bank.distance(torch.as_tensor(x))}


def class_pixel_distances(bank: ClassPixelBank | None, x: torch.Tensor, logits: torch.Tensor) -> dict[str, np.ndarray]:
    """``{"class-pixel-knn": distances}`` of images ``x`` to the training images of the class their n+1
    ``logits`` predict: all the class guard needs (no CVAE pass, no zlib)."""
    if bank is None:
        raise NotFittedError(f"rule {CLASS_GUARD_RULE!r} needs the class pixel banks, which this detector lacks "
                             "(a detector file written before the rule, or fitted without the training labels)")
    return {CLASS_STAT: bank.distance(torch.as_tensor(x), logits[:, :-1].argmax(1))}


def score_images(rule: str, classifier, x: torch.Tensor, batch_size: int = 256,
                 fusion: FeatureKNNFusion | None = None, cvae=None, pixel_bank: PixelBank | None = None,
                 class_pixel_bank: ClassPixelBank | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(scores by ``rule``, n+1 logits) of checked images ``x``: one classifier pass, then only what
    the rule needs.  ``reject+fisher`` computes the image statistics (CVAE pass, zlib, pixel KNN)
    for the images the classifier accepts (p(n+1) <= 0.5) alone: the rejected ones score by
    p(n+1) whatever their statistics, so this is exact and saves the cost on obvious outliers."""
    feats, stats_needed = rule_needs(rule)
    if not feats:
        logits = predict_logits(classifier, x, batch_size)
        return rule_scores((rule,), logits)[rule], logits
    out = model_outputs(classifier, x, ("features", "logits"), batch_size)
    logits = torch.from_numpy(out["logits"])
    stats = None
    if stats_needed:
        keep = ~rejected(nplus1_scores(logits, "ood-class"))
        stats = image_stats(cvae, pixel_bank, x, logits[:, :-1].argmax(1), batch_size, only=keep)
    elif rule in NEEDS_PIXEL:
        stats = pixel_distances(pixel_bank, x)
    elif rule in NEEDS_CLASS_PIXEL:
        stats = class_pixel_distances(class_pixel_bank, x, logits)
    return rule_scores((rule,), logits, out["features"], fusion, stats)[rule], logits


class OODGen(Detector):
    def __init__(self, latent_dim: int = 8, profile: str | Profile = "full", variant: Variant | None = None,
                 score: str = "recommended", seed: int = 0, checkpoint_dir: str | None = None,
                 progress: bool = False, verbose: bool = False, device: str = "cpu", strict: bool = False,
                 precision: str = "fp32", nplus1_seed: int | None = None):
        self.latent_dim = latent_dim
        self.profile = profile
        self.variant = variant
        self.score_rule = score
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.verbose = verbose
        self.device = device
        self.strict = strict
        self.precision = precision
        self.nplus1_seed = nplus1_seed

    def _ckpt(self, name: str):
        if self.checkpoint_dir is None:
            return None
        Path(self.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        return Path(self.checkpoint_dir) / name

    def _fit_shape(self):
        return None          # any (C, H, W): the networks are built for the training images' shape

    def input_shape(self):
        return getattr(self, "image_shape_", None) or (1, 28, 28)

    def fit(self, x, y=None, eval_set=None) -> "OODGen":
        """Train the CVAE and the n+1 classifier on images ``x`` with labels ``y``.  ``eval_set``:
        optional held-out in-distribution ``(x_val, y_val)``; with a profile whose ``monitor`` is on
        (``paper``), the n+1 classifier's validation accuracy and p(n+1)'s AUROC against the generated
        panel made from them are recorded after every epoch (``classifier_history_["monitor"]``).  It
        changes no training step; nothing in it is test data."""
        self._eval_set = eval_set          # checked against the training images at the start of _fit
        try:
            return super().fit(x, y)
        finally:
            self._eval_set = None          # the validation images are not kept in the detector

    def _epoch_monitor(self, prof: Profile):
        """The per-epoch record of :meth:`fit`'s ``eval_set`` (None: not recorded)."""
        if not prof.monitor or getattr(self, "_eval_set", None) is None:
            return None
        x_val, y_val = self._eval_set
        panel = self.generated_panel(x_val, y_val, cache=self._ckpt("panel.pt"))
        return nplus1_monitor(x_val, y_val, panel, prof.eval_batch)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if y is None:
            raise ValueError("OODGen needs class labels: fit(x, y)")
        eval_set = getattr(self, "_eval_set", None)
        if eval_set is not None:             # before any training: a bad eval_set costs nothing
            x_val = check_images(eval_set[0], "eval_set images", shape=tuple(x.shape[1:]))
            self._eval_set = (x_val, check_labels(eval_set[1], len(x_val), "eval_set labels"))
        self.resolved_score()           # an unknown score fails before training
        if self.nplus1_seed is not None and (isinstance(self.nplus1_seed, bool)
                                             or not isinstance(self.nplus1_seed, numbers.Integral)):
            raise ValueError(f"nplus1_seed must be an integer or None, got {self.nplus1_seed!r}")
        prof = PROFILES[self.profile] if isinstance(self.profile, str) else self.profile
        variant = self.variant or Variant()
        n_classes = int(y.max()) + 1
        self.image_shape_ = tuple(int(v) for v in x.shape[1:])
        device = torch.device(self.device)
        x, y = x.to(device), y.to(device)
        torch.manual_seed(self.seed)
        timings = {}
        timings.update(cvae_training=0.0, ellipsoid_fit=0.0, cvae_health=0.0)
        self.cvae_attempts_ = []
        retries = max(0, int(variant.cvae_retries))
        for attempt in range(1 + retries):
            # attempt 0 is the run's own seed (so a healthy first CVAE is exactly the one-attempt run's)
            seed = cvae_attempt_seed(self.seed, attempt)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            self.cvae_ = CVAE.for_variant(n_classes, self.latent_dim, variant, self.image_shape_).to(device)
            name = "cvae.pt" if attempt == 0 else f"cvae-retry{attempt}.pt"
            self.cvae_history_ = train_cvae(self.cvae_, x, y, prof.cvae, self._ckpt(name), seed,
                                            self.progress, self._log, kl_warmup=variant.kl_warmup,
                                            colour_sigma=variant.colour_sigma, lr_warmup=variant.cvae_lr_warmup)
            self.cvae_.eval()
            timings["cvae_training"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self.ellipsoids_ = fit_ellipsoids(self.cvae_, x, y)
            timings["ellipsoid_fit"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self.cvae_health_ = cvae_health(self.cvae_, x, y, self.ellipsoids_, seed=self.seed)
            timings["cvae_health"] += time.perf_counter() - t0
            self.cvae_attempts_.append({"attempt": attempt, "seed": seed, "checkpoint": name,
                                        **{k: self.cvae_health_.get(k) for k in ATTEMPT_FIELDS}})
            if not self.cvae_health_["collapsed"] or attempt == retries:
                break
            self._log(f"CVAE attempt {attempt + 1} collapsed ({health_line(self.cvae_health_)}); training it again "
                      f"from a fresh initialisation (seed {cvae_attempt_seed(self.seed, attempt + 1)}, attempt "
                      f"{attempt + 2} of {1 + retries})")
        self.cvae_health_ = {**self.cvae_health_, "attempts": self.cvae_attempts_}
        check_health(self.cvae_health_, strict=self.strict, log=self._log)
        pools = OutlierPools(self.cvae_, self.ellipsoids_, x, y, variant,
                             max(1, int(prof.pool_fraction * len(x))))
        clf_seed = self.seed if self.nplus1_seed is None else int(self.nplus1_seed)
        torch.manual_seed(clf_seed + 1)
        self.classifier_ = Fig6cCNN(n_classes + 1, self.image_shape_[0], self.image_shape_[1:],
                                    head=variant.head).to(device)
        t0 = time.perf_counter()
        self.classifier_history_ = train_nplus1(self.classifier_, x, y, pools, prof, self._ckpt("nplus1.pt"),
                                                clf_seed, self.progress, self._log, self._epoch_monitor(prof))
        total = time.perf_counter() - t0
        timings["type1_generation"] = pools.seconds["type1"]
        timings["type2_generation"] = pools.seconds["type2"]
        timings["classifier_training"] = total - pools.seconds["type1"] - pools.seconds["type2"]
        self.timings_ = timings
        self.pools_ = pools
        self.n_classes_ = n_classes
        self.fusion_ = None
        self.stats_cvae_ = None
        self.infer_classifier_ = None
        self.train_features_ = None
        self.pixel_bank_ = None
        self.class_pixel_bank_ = None
        # every rule usable after fit (score_all, set_params(score=...)); oodgen run recalibrates on
        # its held-out validation split, which is all a training set too small to calibrate on gets
        if len(x) >= MIN_CALIBRATION:
            calib = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[:N_CALIBRATION]
            self.calibrate(x[calib], x_train=x, y_train=y)

    def resolved_score(self) -> str:
        """The rule :attr:`score_rule` names (``"recommended"`` and ``"paper"`` resolved;
        :func:`oodgen.config.resolve_score`)."""
        rule = resolve_score(self.score_rule)
        if rule not in SCORES:
            raise ValueError(f"unknown score {self.score_rule!r}; use one of {SCORE_ALIASES + SCORES}")
        return rule

    def calibrate(self, x_calib, x_train=None, y_train=None) -> "OODGen":
        """Fit the fusion behind the ``*+knn``, ``reject+fisher`` and guard rules: memory bank = features of
        ``x_train`` (computed once and kept), pixel banks of its images (per class of ``y_train`` too: the
        class guard's; without labels that rule is unavailable), percentiles from the in-distribution images
        ``x_calib`` (ideally held out).  Sets ``calib_scores_`` (every rule's scores of ``x_calib``) and ``thresholds_``
        (every rule's 95 %-TPR threshold on them: what :attr:`threshold_` and :meth:`save` use)."""
        if self.train_features_ is None:
            if x_train is None:
                raise ValueError("OODGen.calibrate: pass x_train the first time (the KNN memory bank)")
            # Only the bank's rows of the training set need features (a tenth by default).
            self.train_size_ = len(x_train)
            rows = torch.from_numpy(FeatureKNNFusion(seed=self.seed).bank_indices(len(x_train)))
            self.train_features_ = model_outputs(self.inference_classifier(), torch.as_tensor(x_train)[rows],
                                                 ("features",))["features"]
            self.pixel_bank_ = PixelBank.from_training_set(x_train, self.seed)
        if getattr(self, "class_pixel_bank_", None) is None and x_train is not None and y_train is not None:
            self.class_pixel_bank_ = ClassPixelBank.from_training_set(x_train, check_labels(y_train, len(x_train)),
                                                                      self.seed)
        out = model_outputs(self.inference_classifier(), x_calib, ("features", "logits"))
        logits = torch.from_numpy(out["logits"])
        p_ood = nplus1_scores(logits, "ood-class")
        stats = self.image_stats(x_calib, logits)
        rules = SCORES
        if getattr(self, "class_pixel_bank_", None) is not None:
            stats.update(class_pixel_distances(self.class_pixel_bank_, x_calib, logits))
        else:
            rules = tuple(r for r in SCORES if r not in NEEDS_CLASS_PIXEL)
        self.fusion_ = FeatureKNNFusion(seed=self.seed).fit(self.train_features_, out["features"], p_ood, stats,
                                                            train_size=self.train_size_,
                                                            calib_class_pixel=stats.get(CLASS_STAT))
        self.calib_scores_ = rule_scores(rules, logits, out["features"], self.fusion_, stats)
        self.thresholds_ = {r: threshold_at_tpr(v, THRESHOLD_TPR) for r, v in self.calib_scores_.items()}
        self._threshold = None
        return self

    def inference_classifier(self):
        """The trained n+1 classifier as an eval-mode, channels-last copy in :attr:`precision`
        (faster scoring on the CPU; :mod:`oodgen.models.inference`), made once after fitting."""
        if getattr(self, "infer_classifier_", None) is None:
            self.infer_classifier_ = inference_copy(self.classifier_, self.precision)
        return self.infer_classifier_

    def stats_cvae(self):
        """The CVAE as an inference copy in :attr:`precision`, for the image statistics; made once."""
        if getattr(self, "stats_cvae_", None) is None:
            self.stats_cvae_ = inference_copy(self.cvae_, self.precision)
        return self.stats_cvae_

    def image_stats(self, x, logits: torch.Tensor, only: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The image statistics of ``x`` given their n+1 ``logits`` (class = argmax of the first n);
        ``only``: a boolean mask, the others get NaN (:func:`~oodgen.detectors.image_stats.image_stats`)."""
        if getattr(self, "cvae_", None) is None or getattr(self, "pixel_bank_", None) is None:
            raise NotFittedError("the image statistics need the CVAE and the pixel bank, which this detector "
                                 "lacks (a detector file without them, or one whose stored parts are damaged)")
        return image_stats(self.stats_cvae(), self.pixel_bank_, torch.as_tensor(x), logits[:, :-1].argmax(1),
                           only=only)

    def logits(self, x) -> torch.Tensor:
        return predict_logits(self.inference_classifier(), check_images(x, shape=self.input_shape()))

    def _scores_and_logits(self, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        rule = self.resolved_score()
        return score_images(rule, self.inference_classifier(), x, fusion=getattr(self, "fusion_", None),
                            cvae=self.stats_cvae() if rule_needs(rule)[1] else None,
                            pixel_bank=getattr(self, "pixel_bank_", None),
                            class_pixel_bank=getattr(self, "class_pixel_bank_", None))

    def _score(self, x: torch.Tensor) -> np.ndarray:
        return self._scores_and_logits(x)[0]

    @property
    def threshold_(self) -> float:
        """Scores above it are called OOD: the 95 %-TPR threshold of the detector's score on the images of
        :meth:`calibrate` (every rule's is in ``thresholds_``), unless :meth:`calibrate_threshold` set one."""
        self.check_fitted()
        thresholds = getattr(self, "thresholds_", None) or {}
        if getattr(self, "_threshold", None) is None and self.resolved_score() in thresholds:
            return float(thresholds[self.resolved_score()])
        return Detector.threshold_.fget(self)

    def decide(self, x, threshold: float | None = None) -> np.ndarray:
        """True where an image is called OOD: ``score(x) > threshold`` (default :attr:`threshold_`)."""
        t = self.threshold_ if threshold is None else check_threshold(threshold)
        return self.score(x) > t

    def evaluate(self, x, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, OOD decisions, predicted in-distribution classes) of images ``x`` from one classifier pass."""
        self.check_fitted()
        t = self.threshold_ if threshold is None else check_threshold(threshold)
        scores, logits = self._scores_and_logits(check_images(x, "score input", shape=self.input_shape()))
        return scores, scores > t, logits[:, :-1].argmax(1).numpy()

    def score_all(self, x, rules=SCORES, components=False, batch_size: int = 256) -> dict[str, np.ndarray]:
        """``{rule: scores}`` (higher = more OOD) of images ``x`` for each of ``rules`` (default every
        rule of :data:`SCORES`) from one classifier pass and one KNN search.  ``components``: also
        each statistic that ``reject+fisher`` combines, alone (``feature-knn`` and those of
        :data:`~oodgen.detectors.image_stats.STATS`): ``True`` for every image; a boolean mask for the
        images it marks (the image statistics of the others are NaN, except where a rule needs them).
        The fused rules need :meth:`calibrate` (``fit`` does it when it has enough images)."""
        self.check_fitted()
        unknown = [r for r in rules if r not in SCORES]
        if unknown:
            raise ValueError(f"unknown score(s) {unknown}; use any of {SCORES}")
        x = check_images(x, "score input", shape=self.input_shape())
        mask = components if isinstance(components, np.ndarray) else None
        want = mask is not None or bool(components)
        feats = want or any(rule_needs(r)[0] for r in rules)
        if feats and getattr(self, "fusion_", None) is None:
            raise NotFittedError(f"scores {[r for r in rules if r in FUSION_RULES] or ['components']} need the "
                                 "fused rules' calibration: call calibrate(x_calib, x_train=...) first")
        out = model_outputs(self.inference_classifier(), x, ("features", "logits"), batch_size)
        logits = torch.from_numpy(out["logits"])
        stats, dist = None, None
        if want or any(rule_needs(r)[1] for r in rules):
            only = None
            if components is not True:     # the images a rule needs them for, and the mask's
                only = ~rejected(nplus1_scores(logits, "ood-class")) if any(rule_needs(r)[1] for r in rules) \
                    else np.zeros(len(x), dtype=bool)
                only = only if mask is None else (only | np.asarray(mask, dtype=bool))
            stats = self.image_stats(x, logits, only=only)
        if GUARD_RULE in rules:         # the guard needs every image's pixel distance: search only those missing
            pixel = np.full(len(x), np.nan) if stats is None else np.array(stats["pixel-knn"], dtype=np.float64)
            missing = np.isnan(pixel)
            if missing.any():
                rows = torch.from_numpy(np.flatnonzero(missing))
                pixel[missing] = pixel_distances(getattr(self, "pixel_bank_", None), x[rows])["pixel-knn"]
            stats = {**(stats or {}), "pixel-knn": pixel}
        if CLASS_GUARD_RULE in rules:   # the class guard: every image against its predicted class's bank
            stats = {**(stats or {}), **class_pixel_distances(getattr(self, "class_pixel_bank_", None), x, logits)}
        if feats:
            dist = self.fusion_.distance(out["features"])
        scores = rule_scores(rules, logits, out["features"], self.fusion_, stats, dist=dist)
        if want:
            scores.update({"feature-knn": np.asarray(dist, dtype=np.float64),
                           **{k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}})
        return scores

    def predict_class(self, x) -> np.ndarray:
        """Predicted in-distribution class (argmax over the first n outputs); ``predict`` labels OOD."""
        return self.logits(x)[:, :-1].argmax(1).numpy()

    def generated_panel(self, x_val, y_val, seed: int | None = None, cache=None) -> dict[str, torch.Tensor]:
        """The fixed panel of generated outliers (:mod:`oodgen.generate.panel`) made with this detector's CVAE
        from in-distribution validation images; ``cache``: a file that keeps it across re-evaluations."""
        if getattr(self, "ellipsoids_", None) is None:
            raise NotFittedError("the generated panel needs the fitted CVAE's ellipsoids (a detector from fit, "
                                 "not one loaded from a file)")
        return cached_panel(None if cache is None else Path(cache), self.cvae_, self.ellipsoids_, x_val, y_val,
                            self.seed if seed is None else seed)

    # ------------------------------------------------------------------ to disk and back
    def _config(self) -> dict:
        variant = self.variant or Variant()
        return {"id": "custom", "profile": self.profile if isinstance(self.profile, str) else "custom",
                "seed": self.seed, "latent_dim": self.latent_dim, "variant": asdict(variant),
                **({} if self.nplus1_seed is None else {"nplus1_seed": int(self.nplus1_seed)})}

    def save(self, path, config: dict | None = None, classes: list[str] | None = None) -> Path:
        """Write the fitted, calibrated detector to ``path`` (a folder gets ``detector.pt``; the format of
        :mod:`oodgen.artifact`): both networks, the feature and pixel banks, the calibration and every
        rule's threshold - all that :meth:`load` and ``oodgen score`` need.  ``config``: the run
        configuration to store (default: this estimator's parameters).  Returns the file's path."""
        self.check_fitted()
        if getattr(self, "fusion_", None) is None or getattr(self, "thresholds_", None) is None:
            raise NotFittedError("save needs the calibration: call calibrate(x_calib, x_train=...) first")
        p = Path(path)
        if p.suffix != ".pt":
            p.mkdir(parents=True, exist_ok=True)
            p = p / "detector.pt"
        write_detector(p, config=config or self._config(), n_classes=self.n_classes_, image_shape=self.image_shape_,
                       classes=classes or getattr(self, "classes_", None), classifier=_cpu_state(self.classifier_),
                       cvae=_cpu_state(self.cvae_), score=self.resolved_score(),
                       thresholds={k: float(v) for k, v in self.thresholds_.items()}, fusion=self.fusion_.state_dict(),
                       pixel_bank=self.pixel_bank_.state_dict(), environment=environment(),
                       class_pixel_bank=None if getattr(self, "class_pixel_bank_", None) is None
                       else self.class_pixel_bank_.state_dict())
        return p

    @classmethod
    def load(cls, path, score: str | None = None, precision: str = "fp32") -> "OODGen":
        """The detector a :meth:`save` (or ``oodgen run``) wrote to ``path`` (a folder or its ``detector.pt``),
        ready to score by ``score`` (default: the one it was saved with; any rule or alias).  Read with
        ``torch.load(weights_only=True)``: only tensors and plain values are unpickled.  Raises
        :class:`~oodgen.artifact.DetectorFileError` when the file is missing, damaged, of another format,
        or lacks what ``score`` needs.  Training-only parts (ellipsoids, histories) are not stored."""
        path, blob = read_detector(path)
        config = blob.get("config") if isinstance(blob.get("config"), dict) else {}
        rule = _loaded_rule(path, blob, score, config)
        n_classes, shape = _checked_header(path, blob)
        variant = Variant.from_dict(config.get("variant") or {})
        det = cls(latent_dim=int(config.get("latent_dim") or 8),
                  profile=config["profile"] if config.get("profile") in PROFILES else "full", variant=variant,
                  score=rule, seed=int(config.get("seed") or 0), precision=resolve_precision(precision))
        det.classifier_ = _load_classifier(path, blob, n_classes, shape, variant.head)
        det.fusion_ = _load_part(rule in FUSION_RULES, path, rule, "fusion", lambda: _load_fusion(path, blob, rule))
        det.cvae_ = _load_part(rule in NEEDS_STATS, path, rule, "cvae",
                               lambda: _load_cvae(path, blob, n_classes, rule, det.fusion_, shape, variant))
        det.pixel_bank_ = _load_part(rule in NEEDS_PIXEL, path, rule, "pixel_bank",
                                     lambda: _load_pixel_bank(path, blob, rule))
        det.class_pixel_bank_ = _load_part(rule in NEEDS_CLASS_PIXEL, path, rule, "class_pixel_bank",
                                           lambda: _load_class_pixel_bank(path, blob, rule))
        det.thresholds_ = _loaded_thresholds(path, blob, rule, det.fusion_)
        det.n_classes_, det.image_shape_, det.classes_ = n_classes, shape, blob.get("classes")
        det.config_, det.environment_, det.path_ = config, blob.get("environment", {}), path
        det.ellipsoids_ = det.infer_classifier_ = det.stats_cvae_ = det.train_features_ = None
        det.fitted_, det._threshold, det._threshold_images = True, None, None
        return det


#: Rules added after some detector files were written, whose calibration images' scores follow from the
#: stored calibration feature distances d: feature-knn is d itself; the pixel guard is d / (1 + d) for every
#: calibration image, since none lies beyond the largest calibration pixel distance (its bar).
FROM_CALIB_KNN = {FEATURE_RULE: lambda d: d, GUARD_RULE: lambda d: d / (1.0 + d)}


def check_threshold(t: float) -> float:
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be a finite number, got {t}")
    return t


def _cpu_state(model) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _loaded_rule(path: Path, blob: dict, score: str | None, config: dict) -> str:
    rule = blob["score"] if score is None else resolve_score(score, str(config.get("id", "")))
    if rule not in SCORES:
        if score is not None:
            raise ValueError(f"unknown score rule {score!r}; use one of {SCORE_ALIASES + SCORES}")
        raise DetectorFileError(f"{path}: unknown score rule {rule!r}; this version knows {SCORES}")
    return rule


def _checked_header(path: Path, blob: dict) -> tuple[int, tuple[int, int, int]]:
    n_classes = blob["n_classes"]
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise DetectorFileError(f"{path}: invalid n_classes {n_classes!r}")
    shape = blob.get("image_shape", [1, 28, 28])
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise DetectorFileError(f"{path}: invalid image_shape {shape!r}")
    return n_classes, tuple(shape)


def _load_classifier(path: Path, blob: dict, n_classes: int, shape, head: str = "linear") -> Fig6cCNN:
    classifier = Fig6cCNN(n_classes + 1, shape[0], shape[1:], head=head)
    try:
        classifier.load_state_dict(blob["classifier"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DetectorFileError(f"{path}: classifier weights do not fit a Fig6cCNN with "
                                f"{n_classes + 1} outputs ({first})") from None
    return classifier.eval()


def _load_part(needed: bool, path: Path, rule: str, what: str, load):
    """A stored part: an error naming the file when the rule needs it, else None when it is absent or damaged
    (a rule that needs it then says so when asked)."""
    try:
        return load()
    except DetectorFileError:
        if needed:
            raise
        return None


def _load_fusion(path: Path, blob: dict, rule: str) -> FeatureKNNFusion:
    if not isinstance(blob.get("fusion"), dict):
        raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored feature bank ('fusion'), "
                                "which this file lacks - rerun `oodgen run` with this version")
    try:
        return FeatureKNNFusion.from_state_dict(blob["fusion"])
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise DetectorFileError(f"{path}: damaged feature bank ({exc})") from None


def _load_cvae(path: Path, blob: dict, n_classes: int, rule: str, fusion, shape, variant: Variant) -> CVAE:
    """The stored CVAE (latent size from its weights), for the image statistics."""
    state = blob.get("cvae")
    if not isinstance(state, dict) or "encoder.mu.weight" not in state:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored CVAE ('cvae'), which this file "
                                "lacks - rerun `oodgen run`")
    if fusion is None or fusion.calib_stats_ is None:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs calibration statistics that this file's "
                                "feature bank lacks - rerun `oodgen run` with this version")
    cvae = CVAE.for_variant(n_classes, int(state["encoder.mu.weight"].shape[0]), variant, shape)
    try:
        cvae.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DetectorFileError(f"{path}: CVAE weights do not fit {n_classes} classes ({first})") from None
    return cvae.eval()


def _load_pixel_bank(path: Path, blob: dict, rule: str) -> PixelBank:
    try:
        return PixelBank.from_state_dict(blob["pixel_bank"])
    except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored pixel bank, which is missing "
                                f"or damaged ({type(exc).__name__}: {exc}) - rerun `oodgen run`") from None


def _load_class_pixel_bank(path: Path, blob: dict, rule: str) -> ClassPixelBank:
    if "class_pixel_bank" not in blob:
        raise DetectorFileError(f"{path}: score rule {rule!r} needs the stored class pixel banks, which this file "
                                f"lacks (written before the rule existed) - rerun `oodgen run`, or score it with "
                                f"--score {GUARD_RULE} (the recommended rule, which needs no class banks)")
    try:
        return ClassPixelBank.from_state_dict(blob["class_pixel_bank"])
    except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorFileError(f"{path}: damaged class pixel banks ({type(exc).__name__}: {exc}) - rerun "
                                "`oodgen run`") from None


def _loaded_thresholds(path: Path, blob: dict, rule: str, fusion) -> dict[str, float]:
    thresholds = blob["thresholds"]
    if isinstance(thresholds, dict) and rule in FROM_CALIB_KNN and rule not in thresholds and fusion is not None:
        # A file written before the rule existed: its calibration scores follow from the stored calibration
        # distances, so its threshold is the same 95 % quantile that `oodgen run` stores for every rule now.
        d = np.asarray(fusion.calib_knn_, dtype=np.float64)
        thresholds = {**thresholds, rule: threshold_at_tpr(FROM_CALIB_KNN[rule](d), THRESHOLD_TPR)}
    if not isinstance(thresholds, dict) or rule not in thresholds:
        raise DetectorFileError(f"{path}: no stored threshold for score rule {rule!r}")
    return {k: float(v) for k, v in thresholds.items()}
