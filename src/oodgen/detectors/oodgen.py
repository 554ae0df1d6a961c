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
* ``"feature-knn"`` (beyond the paper; the recommended score, :data:`oodgen.config.RECOMMENDED`): the
  k-th nearest training feature's distance in the same classifier's penultimate layer;
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
``"paper"`` = p(n+1)), ``seed``;
``precision`` of scoring (``"fp32"`` default, ``"bf16"``, ``"auto"``;
:mod:`oodgen.models.inference`; training is always float32).
``fit`` measures the trained CVAE's health (``cvae_health_``, :mod:`oodgen.generate.health`),
prints it when ``verbose``; a collapsed CVAE is trained again from a fresh initialisation (seed
:func:`cvae_attempt_seed`) up to ``variant.cvae_retries`` times (every attempt is recorded in
``cvae_health_["attempts"]``); when the last one has collapsed too, it warns, and raises
:class:`~oodgen.generate.health.CollapsedCVAEError` when ``strict``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..config import PROFILES, SCORE_ALIASES, Profile, Variant, resolve_score
from ..models import CVAE, Fig6cCNN
from ..generate import NotFittedError
from ..generate.health import check_health, cvae_health, health_line
from ..train import OutlierPools, fit_ellipsoids, predict_logits, train_cvae, train_nplus1
from .base import Detector, check_images
from .fusion import MIN_CALIBRATION, NEEDS_STATS, RULES as FUSION_RULES, FeatureKNNFusion, rejected
from .image_stats import PixelBank, image_stats
from ..models.inference import inference_copy
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
        raise ValueError(f"score {rule!r} needs the classifier's features too: use OODGen.score or "
                         "oodgen.score.ScoringDetector.score")
    raise ValueError(f"unknown score {rule!r}; use one of {SCORES}")


def rule_scores(rules, logits: torch.Tensor, features: np.ndarray | None = None,
                fusion: FeatureKNNFusion | None = None, stats: dict | None = None,
                dist: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The one scoring path of a trained n+1 run: ``{rule: scores}`` for each of ``rules`` (see
    :data:`SCORES`) from one classifier pass's ``logits`` (and penultimate ``features``), the fitted
    ``fusion`` and the images' ``stats`` where a rule needs them (``dist``: the feature-KNN distances
    when already computed).  Used by :class:`OODGen`, :class:`oodgen.score.ScoringDetector` and
    ``oodgen run``, so the three always agree."""
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


def score_images(rule: str, classifier, x: torch.Tensor, batch_size: int = 256,
                 fusion: FeatureKNNFusion | None = None, cvae=None,
                 pixel_bank: PixelBank | None = None) -> tuple[np.ndarray, torch.Tensor]:
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
    return rule_scores((rule,), logits, out["features"], fusion, stats)[rule], logits


class OODGen(Detector):
    def __init__(self, latent_dim: int = 8, profile: str | Profile = "full", variant: Variant | None = None,
                 score: str = "recommended", seed: int = 0, checkpoint_dir: str | None = None,
                 progress: bool = False, verbose: bool = False, device: str = "cpu", strict: bool = False,
                 precision: str = "fp32"):
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

    def _ckpt(self, name: str):
        if self.checkpoint_dir is None:
            return None
        Path(self.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        return Path(self.checkpoint_dir) / name

    def _fit_shape(self):
        return None          # any (C, H, W): the networks are built for the training images' shape

    def input_shape(self):
        return getattr(self, "image_shape_", None) or (1, 28, 28)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if y is None:
            raise ValueError("OODGen needs class labels: fit(x, y)")
        self.resolved_score()           # an unknown score fails before training
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
        torch.manual_seed(self.seed + 1)
        self.classifier_ = Fig6cCNN(n_classes + 1, self.image_shape_[0], self.image_shape_[1:]).to(device)
        t0 = time.perf_counter()
        self.classifier_history_ = train_nplus1(self.classifier_, x, y, pools, prof, self._ckpt("nplus1.pt"),
                                                self.seed, self.progress, self._log)
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
        # every rule usable after fit (score_all, set_params(score=...)); oodgen run recalibrates on
        # its held-out validation split, which is all a training set too small to calibrate on gets
        if len(x) >= MIN_CALIBRATION:
            calib = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[:N_CALIBRATION]
            self.calibrate(x[calib], x_train=x)

    def resolved_score(self) -> str:
        """The rule :attr:`score_rule` names (``"recommended"`` and ``"paper"`` resolved;
        :func:`oodgen.config.resolve_score`)."""
        rule = resolve_score(self.score_rule)
        if rule not in SCORES:
            raise ValueError(f"unknown score {self.score_rule!r}; use one of {SCORE_ALIASES + SCORES}")
        return rule

    def calibrate(self, x_calib, x_train=None) -> "OODGen":
        """Fit the fusion behind the ``*+knn`` and ``reject+fisher`` rules: memory bank = features of
        ``x_train`` (computed once and kept), percentiles from the in-distribution images ``x_calib``
        (ideally held out).  Keeps ``calib_outputs_`` = (features, logits, image statistics) of
        ``x_calib``, so that a caller who also scores them need not compute them again."""
        if self.train_features_ is None:
            if x_train is None:
                raise ValueError("OODGen.calibrate: pass x_train the first time (the KNN memory bank)")
            # Only the bank's rows of the training set need features (a tenth by default).
            self.train_size_ = len(x_train)
            rows = torch.from_numpy(FeatureKNNFusion(seed=self.seed).bank_indices(len(x_train)))
            self.train_features_ = model_outputs(self.inference_classifier(), torch.as_tensor(x_train)[rows],
                                                 ("features",))["features"]
            self.pixel_bank_ = PixelBank.from_training_set(x_train, self.seed)
        out = model_outputs(self.inference_classifier(), x_calib, ("features", "logits"))
        logits = torch.from_numpy(out["logits"])
        p_ood = nplus1_scores(logits, "ood-class")
        stats = self.image_stats(x_calib, logits)
        self.fusion_ = FeatureKNNFusion(seed=self.seed).fit(self.train_features_, out["features"], p_ood, stats,
                                                            train_size=self.train_size_)
        self.calib_outputs_ = (out["features"], logits, stats)
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
        return image_stats(self.stats_cvae(), self.pixel_bank_, torch.as_tensor(x), logits[:, :-1].argmax(1),
                           only=only)

    def logits(self, x) -> torch.Tensor:
        return predict_logits(self.inference_classifier(), check_images(x, shape=self.input_shape()))

    def _score(self, x: torch.Tensor) -> np.ndarray:
        rule = self.resolved_score()
        return score_images(rule, self.inference_classifier(), x, fusion=self.fusion_,
                            cvae=self.stats_cvae() if rule_needs(rule)[1] else None,
                            pixel_bank=self.pixel_bank_)[0]

    def score_all(self, x, rules=SCORES, components: bool = False) -> dict[str, np.ndarray]:
        """``{rule: scores}`` (higher = more OOD) of images ``x`` for each of ``rules`` (default every
        rule of :data:`SCORES`) from one classifier pass and one KNN search.  ``components``: also
        each statistic that ``reject+fisher`` combines, alone (``feature-knn`` and those of
        :data:`~oodgen.detectors.image_stats.STATS`, computed for every image).  The fused rules
        need :meth:`calibrate` (done by ``fit`` when the detector's own score is one of them)."""
        self.check_fitted()
        unknown = [r for r in rules if r not in SCORES]
        if unknown:
            raise ValueError(f"unknown score(s) {unknown}; use any of {SCORES}")
        x = check_images(x, "score input", shape=self.input_shape())
        feats = components or any(rule_needs(r)[0] for r in rules)
        if feats and getattr(self, "fusion_", None) is None:
            raise NotFittedError(f"scores {[r for r in rules if r in FUSION_RULES] or ['components']} need the "
                                 "fused rules' calibration: call calibrate(x_calib, x_train=...) first")
        out = model_outputs(self.inference_classifier(), x, ("features", "logits"))
        logits = torch.from_numpy(out["logits"])
        stats, dist = None, None
        if components or any(rule_needs(r)[1] for r in rules):
            only = None if components else ~rejected(nplus1_scores(logits, "ood-class"))
            stats = self.image_stats(x, logits, only=only)
        if feats:
            dist = self.fusion_.distance(out["features"])
        scores = rule_scores(rules, logits, out["features"], self.fusion_, stats, dist=dist)
        if components:
            scores.update({"feature-knn": np.asarray(dist, dtype=np.float64),
                           **{k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}})
        return scores

    def predict_class(self, x) -> np.ndarray:
        """Predicted in-distribution class (argmax over the first n outputs); ``predict`` labels OOD."""
        return self.logits(x)[:, :-1].argmax(1).numpy()
