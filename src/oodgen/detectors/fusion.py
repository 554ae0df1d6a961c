"""Beyond the paper: the n+1 classifier's p(n+1) fused with other in-distribution statistics.

p(n+1) rejects what looks like the generated outliers (noise, far-away inputs, blurred decodes)
but misses OOD sets that land inside an in-distribution decision region (MNIST digits seen by a
Fashion-MNIST model get p(n+1) ~ 0).  Six rules add statistics that see those; none uses OOD data:

* ``"feature-knn+class-pixel-guard@max"`` (:data:`CLASS_GUARD_RULE`): the winner of rounds 3-5 of
  ``docs/protocol.md`` on the linear head: the guard below with a class-conditional pixel distance, the distance
  to the k-th nearest training image *of the class the classifier predicts*
  (:class:`~oodgen.detectors.image_stats.ClassPixelBank`, at most 5,000 images per class).  Images
  farther than every calibration image's own such distance rank first, by it; the others in
  ``feature-knn`` order.  A glyph that the features put next to a class is farther from that class's
  images than from the whole bank;
* ``"feature-knn+pixel-guard@max"`` (:data:`GUARD_RULE`): the recommended score, the score half of round 6's
  winner (with the cosine head; round 2's winner too), chosen on leave-one-class-out folds of the training
  splits: images farther in pixel
  space (KNN distance to a training subset) than every calibration image rank first, by that
  distance; all others in ``feature-knn`` order.  An in-distribution image passes the bar with
  probability at most 1 / (n_calibration + 1), so it changes the order of almost nothing that
  ``feature-knn`` sees, and catches far-off images (glyphs, strokes) that the classifier's features
  map close to a class;
* ``"feature-knn"`` (:data:`FEATURE_RULE`): the KNN distance in the n+1 classifier's penultimate
  features alone (Sun et al. 2022 on our classifier, p(n+1) not used); round 1's winner;
* ``"ood-class+knn"`` (:data:`KNN_RULE`): the larger of two in-distribution percentiles, of
  p(n+1) and of the KNN distance in the same classifier's penultimate features (Sun et al. 2022),
  percentiles taken on held-out in-distribution *calibration* images ("flag if either flags";
  the smaller percentile and the raw distance break ties);
* ``"reject+knn"`` (:data:`REJECT_RULE`): the classifier's own reject option first (p(n+1) > 0.5
  ranks above every accepted image), accepted images ranked by the KNN distance;
* ``"reject+fisher"`` (:data:`FISHER_RULE`): the same reject option, accepted images ranked by
  Fisher's combination -sum(log p) of conformal p-values of four statistics: the feature KNN
  distance and the three of :mod:`oodgen.detectors.image_stats` (CVAE likelihood, likelihood
  minus zlib code length, pixel-space KNN distance).

**Caveat kept with every number they produce:** the three rules marked † were designed after looking
at the seed-0 test OOD sets of earlier runs, and both pixel guards after the test tables showed
``feature-knn`` losing to pixel KNN on stroke-like sets (``docs/protocol.md``, rounds 2 and 3, say so).
The pixel guard is the default because round 6 of the selection protocol, which reads no test split and
no test OOD set, chose it with the cosine head (``results/selection/round6/decision.md``).  Higher = more OOD.

The feature bank is a seeded random fraction :data:`FEATURE_BANK_FRACTION` of the training
features searched with k = 50 scaled by that fraction (k = 10 for a fifth; Sun et al. subsample
the bank the same way), chosen on validation images and generated outliers only
(``experiments/choose_banks.py``, ``results/ablation/bank_choice.json``).  Detector files written with
the full bank keep it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..generate import NotFittedError
from .base import InputError
from .image_stats import CLASS_STAT, STATS as STAT_NAMES, scaled_k
from .knn import KNN

FEATURE_RULE = "feature-knn"
KNN_RULE = "ood-class+knn"
RULE = KNN_RULE               # the older name
REJECT_RULE = "reject+knn"
FISHER_RULE = "reject+fisher"
GUARD_RULE = "feature-knn+pixel-guard@max"
CLASS_GUARD_RULE = "feature-knn+class-pixel-guard@max"
RULES = (FEATURE_RULE, KNN_RULE, REJECT_RULE, FISHER_RULE, GUARD_RULE, CLASS_GUARD_RULE)
GUARD_LEVEL = 1.0              # the guard's bar: the largest calibration pixel-KNN distance
REJECT_AT = 0.5                # p(n+1) above which the reject rules reject outright
FEATURE_K = 50                 # neighbours in the full bank
FEATURE_BANK_FRACTION = 0.2    # chosen by experiments/choose_banks.py (results/ablation/bank_choice.json)
MIN_CALIBRATION = 20           # held-out in-distribution images the percentiles need at the least
# rules that need the image statistics (oodgen.detectors.image_stats) of every image
NEEDS_STATS = (FISHER_RULE,)
# rules that need the pixel-space KNN distance (the pixel bank), without the CVAE statistics for the guard
NEEDS_PIXEL = (FISHER_RULE, GUARD_RULE)
# rules that need the class-conditional pixel distance (the class pixel banks) of every image
NEEDS_CLASS_PIXEL = (CLASS_GUARD_RULE,)
# The guards: rule -> (the statistic that ranks images beyond its calibration maximum first, the fit(...)
# argument its calibration values come from, what those are).  One mechanism for both (_combine, combine_all).
GUARDS = {GUARD_RULE: ("pixel-knn", "calib_stats", "calibration statistics (pixel-KNN distances)"),
          CLASS_GUARD_RULE: (CLASS_STAT, "calib_class_pixel", "class-conditional pixel distances")}
# the image statistics a cheaper Fisher combination keeps (no CVAE pass, no zlib): a candidate of
# docs/protocol.md (oodgen.selection)
FISHER_LITE_STATS = ("pixel-knn",)


def _percentile(reference_sorted: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.searchsorted(reference_sorted, s, side="right") / len(reference_sorted)


def _pvalue(reference_sorted: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Conformal p-value: (1 + #{reference >= s}) / (n + 1)."""
    n = len(reference_sorted)
    return (1.0 + n - np.searchsorted(reference_sorted, s, side="left")) / (n + 1.0)


def rejected(ood_prob: np.ndarray) -> np.ndarray:
    """The images the classifier's reject option takes (p(n+1) > 0.5): ``reject+knn`` and
    ``reject+fisher`` rank them first by p(n+1) alone, whatever their other statistics."""
    return np.asarray(ood_prob, dtype=np.float64).reshape(-1) > REJECT_AT


def fisher_score(fusion: "FeatureKNNFusion", dist: np.ndarray, ood_prob: np.ndarray, stats: dict,
                 names=STAT_NAMES) -> np.ndarray:
    """The reject option first, accepted images by Fisher's combination -sum(log p) of the conformal
    p-values of the feature-KNN distance ``dist`` and of the image statistics ``names`` (against the
    fitted ``fusion``'s calibration images).  Rejected images score in (2.5, 3], accepted ones
    f / (1 + f) in [0, 1)."""
    ood_prob = np.asarray(ood_prob, dtype=np.float64).reshape(-1)
    logp = np.log(_pvalue(fusion.calib_knn_, np.asarray(dist, dtype=np.float64).reshape(-1)))
    for name in names:
        logp = logp + np.log(_pvalue(fusion.calib_stats_[name], np.asarray(stats[name], dtype=np.float64)))
    f = -logp
    with np.errstate(invalid="ignore"):     # NaN statistics of rejected images are not used
        return np.where(rejected(ood_prob), 2.0 + ood_prob, f / (1.0 + f))


def guard_threshold(calib_sorted: np.ndarray, level: float) -> float:
    """The pixel-KNN distance above which the guard ranks an image first: the empirical ``level``
    quantile of the calibration images' distances (the ``ceil(level * n)``-th smallest; ``level = 1``
    is the largest, so an in-distribution image exceeds it with probability at most 1 / (n + 1))."""
    if not 0.0 < float(level) <= 1.0:
        raise ValueError(f"guard level must lie in (0, 1], got {level!r}")
    n = len(calib_sorted)
    return float(calib_sorted[min(n, max(1, int(np.ceil(float(level) * n)))) - 1])


def pixel_guard_score(fusion: "FeatureKNNFusion", dist: np.ndarray, pixel: np.ndarray, level: float) -> np.ndarray:
    """``feature-knn`` guarded by the pixel-space KNN distance: images farther in pixel space than the
    ``level`` quantile of the calibration images (:func:`guard_threshold`) rank first, ordered by that
    distance (scores in [1, 2)); the others keep the feature-KNN order (d / (1 + d) in [0, 1))."""
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    pixel = np.asarray(pixel, dtype=np.float64).reshape(-1)
    if fusion.calib_stats_ is None:
        raise NotFittedError("the pixel guard needs the calibration images' pixel-KNN distances: fit the fusion "
                             "with calib_stats")
    return guard_score(dist, pixel, fusion.calib_stats_["pixel-knn"], level)


def guard_score(dist: np.ndarray, guard: np.ndarray, calib_guard_sorted: np.ndarray, level: float) -> np.ndarray:
    """Images whose ``guard`` statistic exceeds the ``level`` quantile of the calibration images' values
    (:func:`guard_threshold`) rank first, by that statistic (scores in [1, 2)); the others in ``dist``
    order (d / (1 + d) in [0, 1))."""
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    guard = np.asarray(guard, dtype=np.float64).reshape(-1)
    if len(dist) != len(guard):
        raise InputError(f"guard: {len(dist)} distances but {len(guard)} guard values")
    t = guard_threshold(np.asarray(calib_guard_sorted, dtype=np.float64), level)
    return np.where(guard > t, 1.0 + guard / (1.0 + guard), dist / (1.0 + dist))


def class_max_scales(calib_class_dist: np.ndarray, calib_labels) -> dict[int, float]:
    """Per class, the largest class-conditional pixel distance among the calibration images the classifier
    assigns to it: the scale of round 5's ``@class-max`` candidate (docs/protocol.md)."""
    d = np.asarray(calib_class_dist, dtype=np.float64).reshape(-1)
    labels = np.asarray(calib_labels).reshape(-1)
    if len(d) != len(labels):
        raise InputError(f"class scales: {len(d)} distances but {len(labels)} labels")
    return {int(c): float(d[labels == c].max()) for c in np.unique(labels)}


def class_ratio(class_dist: np.ndarray, labels, scales: dict[int, float], fallback: float) -> np.ndarray:
    """Each image's class-conditional pixel distance divided by its predicted class's scale (``fallback``
    for a class without one: no calibration image assigned to it, or a bank too small to have one)."""
    d = np.asarray(class_dist, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(d) != len(labels):
        raise InputError(f"class ratio: {len(d)} distances but {len(labels)} labels")
    s = np.array([scales.get(int(c), fallback) for c in labels], dtype=np.float64)
    if (s <= 0).any():
        raise ValueError("class ratio: every class scale must be positive")
    return d / s


def _relative(calib_sorted: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.asarray(s, dtype=np.float64).reshape(-1) / max(float(calib_sorted[-1]), 1e-12)


def pixel_max_score(fusion: "FeatureKNNFusion", dist: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Round-3 candidate ``feature-knn+pixel-knn@max``: the larger of the calibration percentiles of the
    feature-KNN and pixel-KNN distances; the smaller one, then the larger distance relative to its largest
    calibration value (in (0, 1) after r / (1 + r)), break ties well below one percentile step."""
    cf, cp = fusion.calib_knn_, fusion.calib_stats_["pixel-knn"]
    a, b = _percentile(cf, np.asarray(dist, dtype=np.float64).reshape(-1)), _percentile(cp, np.asarray(pixel, dtype=np.float64).reshape(-1))
    r = np.maximum(_relative(cf, dist), _relative(cp, pixel))
    step = 1.0 / max(len(cf), len(cp))
    return np.maximum(a, b) + 0.1 * step * np.minimum(a, b) + 0.01 * step * r / (1.0 + r)


def pixel_fisher_score(fusion: "FeatureKNNFusion", dist: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Round-3 candidate ``feature-knn+pixel-knn@fisher``: -log p1 - log p2 of the conformal p-values of the
    feature-KNN and pixel-KNN distances (no reject option); the summed distances relative to their largest
    calibration values break ties (below 1e-6, smaller than any step of the p-values)."""
    cf, cp = fusion.calib_knn_, fusion.calib_stats_["pixel-knn"]
    f = -np.log(_pvalue(cf, np.asarray(dist, dtype=np.float64).reshape(-1))) \
        - np.log(_pvalue(cp, np.asarray(pixel, dtype=np.float64).reshape(-1)))
    r = _relative(cf, dist) + _relative(cp, pixel)
    return f + 1e-6 * r / (1.0 + r)


def _check_stats(stats, n: int, what: str, skip: np.ndarray | None = None, names=STAT_NAMES,
                 rule: str = FISHER_RULE) -> dict[str, np.ndarray]:
    """The image statistics ``names`` of ``n`` images, each present, of length n and finite (except where
    ``skip`` marks an image that ``rule`` does not need them for)."""
    if stats is None:
        raise InputError(f"fusion: rule {rule!r} needs the image statistics {tuple(names)} of the "
                         f"{what} images (oodgen.detectors.image_stats.image_stats)")
    out = {}
    for name in names:
        if name not in stats:
            raise InputError(f"fusion: image statistic {name!r} missing for the {what} images")
        v = np.asarray(stats[name], dtype=np.float64).reshape(-1)
        if len(v) != n:
            raise InputError(f"fusion: {n} {what} images but {len(v)} values of {name!r}")
        if not np.all(np.isfinite(v if skip is None else v[~skip])):
            raise InputError(f"fusion: non-finite values of {name!r} for the {what} images"
                             + ("" if skip is None else " that the classifier does not reject"))
        out[name] = v
    return out


class FeatureKNNFusion:
    """The k-th nearest-neighbour feature distance alone (``feature-knn``) and its fusion with p(n+1)
    (and, for ``reject+fisher``, with the image statistics) by the rules of :data:`RULES`.

    Parameters
    ----------
    k : neighbours in the full bank (the k-th nearest training feature's distance is the KNN score).
    bank_fraction : fraction of the training features kept in the bank (seeded random subset);
        the search then uses ``k_ = max(1, round(k * bank_fraction))`` neighbours.
    seed : seed of the subset.
    """

    def __init__(self, k: int = FEATURE_K, bank_fraction: float = FEATURE_BANK_FRACTION, seed: int = 0):
        self.k = k
        self.bank_fraction = bank_fraction
        self.seed = seed

    def bank_indices(self, n: int) -> np.ndarray:
        """Rows of ``n`` training features that form the bank (sorted; all of them at fraction 1)."""
        if not 0.0 < float(self.bank_fraction) <= 1.0:
            raise ValueError(f"fusion: bank_fraction must lie in (0, 1], got {self.bank_fraction!r}")
        m = min(n, max(1, int(round(float(self.bank_fraction) * n))))
        if m == n:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.seed).permutation(n)[:m])

    def fit(self, train_features: np.ndarray, calib_features: np.ndarray,
            calib_ood_prob: np.ndarray, calib_stats: dict | None = None,
            train_size: int | None = None, calib_class_pixel: np.ndarray | None = None) -> "FeatureKNNFusion":
        """Memory bank from training features; percentiles from held-out in-distribution images.

        ``calib_stats`` (the image statistics of the calibration images) enables ``reject+fisher`` and the
        pixel guard; ``calib_class_pixel`` (their class-conditional pixel distances) the class guard.
        ``train_size``: pass it when ``train_features`` holds only the rows
        ``bank_indices(train_size)`` of the training set's features (saves computing the others).
        """
        calib_ood_prob = np.asarray(calib_ood_prob, dtype=np.float64).reshape(-1)
        if len(calib_ood_prob) != len(calib_features):
            raise InputError(f"fusion: {len(calib_features)} calibration features but "
                             f"{len(calib_ood_prob)} OOD-class probabilities")
        if len(calib_ood_prob) < MIN_CALIBRATION:
            raise InputError(f"fusion: need at least {MIN_CALIBRATION} calibration images, got {len(calib_ood_prob)}")
        train_features = np.asarray(train_features)
        if train_size is None:
            n = len(train_features)
            train_features = train_features[self.bank_indices(n)]
        else:
            n = int(train_size)
            if len(train_features) != len(self.bank_indices(n)):
                raise InputError(f"fusion: train_size={n} means a bank of {len(self.bank_indices(n))} rows "
                                 f"(bank_indices), got {len(train_features)}")
        # at most the whole bank (a tiny training set: oodgen.preflight says so)
        self.k_ = min(scaled_k(self.k, len(train_features), n) if n else self.k, len(train_features))
        self.knn_ = KNN(None, k=self.k_).fit_outputs(features=train_features)
        self.calib_knn_ = np.sort(self.knn_.score_outputs(features=calib_features))
        self.calib_p_ = np.sort(calib_ood_prob)
        self.calib_stats_ = None
        if calib_stats is not None:
            checked = _check_stats(calib_stats, len(calib_ood_prob), "calibration")
            self.calib_stats_ = {k: np.sort(v) for k, v in checked.items()}
        self.calib_class_pixel_ = None
        if calib_class_pixel is not None:
            checked = _check_stats({CLASS_STAT: calib_class_pixel}, len(calib_ood_prob), "calibration",
                                   names=(CLASS_STAT,), rule=CLASS_GUARD_RULE)
            self.calib_class_pixel_ = np.sort(checked[CLASS_STAT])
        return self

    def score(self, features: np.ndarray, ood_prob: np.ndarray, rule: str = KNN_RULE,
              stats: dict | None = None) -> np.ndarray:
        """Fused scores (higher = more OOD) by ``rule`` (one of :data:`RULES`); ``stats`` = the
        images' statistics (:func:`oodgen.detectors.image_stats.image_stats`), needed by
        ``"reject+fisher"`` only."""
        return self.score_all(features, ood_prob, (rule,), stats)[rule]

    def score_all(self, features: np.ndarray, ood_prob: np.ndarray, rules=RULES,
                  stats: dict | None = None) -> dict[str, np.ndarray]:
        """Scores by each of ``rules``, from one KNN search (the expensive part)."""
        return self.combine_all(self.distance(features), ood_prob, rules, stats)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """The KNN distance of each feature row to the training bank (the fused rules' shared input)."""
        if not hasattr(self, "knn_"):
            raise NotFittedError("FeatureKNNFusion is not fitted: call fit(...) first")
        return self.knn_.score_outputs(features=features)

    def combine_all(self, dist: np.ndarray, ood_prob: np.ndarray, rules=RULES,
                    stats: dict | None = None) -> dict[str, np.ndarray]:
        """Scores by each of ``rules`` from precomputed :meth:`distance` values."""
        for rule in rules:
            if rule not in RULES:
                raise ValueError(f"unknown fusion rule {rule!r}; use one of {RULES}")
        if not hasattr(self, "knn_"):
            raise NotFittedError("FeatureKNNFusion is not fitted: call fit(...) first")
        ood_prob = np.asarray(ood_prob, dtype=np.float64).reshape(-1)
        dist = np.asarray(dist, dtype=np.float64).reshape(-1)
        if len(dist) != len(ood_prob):
            raise InputError(f"fusion: {len(dist)} feature rows but {len(ood_prob)} OOD-class probabilities")
        checked: dict[str, np.ndarray] = {}
        for rule in rules:
            if rule in NEEDS_STATS:
                if self.calib_stats_ is None:
                    raise NotFittedError(f"FeatureKNNFusion was fitted without calibration statistics, so rule "
                                         f"{rule!r} is unavailable; pass calib_stats to fit(...)")
                # rejected images need none (NaN allowed there: image_stats(..., only=...))
                checked.update(_check_stats(stats, len(dist), "scored", skip=rejected(ood_prob), rule=rule))
            elif rule in GUARDS:        # a guard: its statistic of every image
                stat, arg, what = GUARDS[rule]
                if self._calib_of(stat) is None:
                    raise NotFittedError(f"FeatureKNNFusion was fitted without the calibration images' {what}, so "
                                         f"rule {rule!r} is unavailable; pass {arg} to fit(...)")
                checked.update(_check_stats(stats, len(dist), "scored", names=(stat,), rule=rule))
        stats = checked or stats
        return {rule: self._combine(dist, ood_prob, rule, stats) for rule in rules}

    def _calib_of(self, stat: str) -> np.ndarray | None:
        """The calibration images' sorted values of a guard's statistic (None: fitted without them)."""
        if stat == CLASS_STAT:
            return getattr(self, "calib_class_pixel_", None)
        return None if self.calib_stats_ is None else self.calib_stats_.get(stat)

    def _combine(self, dist: np.ndarray, ood_prob: np.ndarray, rule: str, stats=None) -> np.ndarray:
        if rule == FISHER_RULE:
            return fisher_score(self, dist, ood_prob, stats)
        if rule == FEATURE_RULE:
            return dist.copy()
        if rule in GUARDS:
            stat = GUARDS[rule][0]
            return guard_score(dist, stats[stat], self._calib_of(stat), GUARD_LEVEL)
        if rule == REJECT_RULE:
            # Rejected images score in (2.5, 3], accepted ones d / (1 + d) in [0, 1).
            return np.where(rejected(ood_prob), 2.0 + ood_prob, dist / (1.0 + dist))
        a, b = _percentile(self.calib_p_, ood_prob), _percentile(self.calib_knn_, dist)
        # Percentiles move in steps of 1/n_calib; the tie-breakers stay far below one step.
        step = 1.0 / max(len(self.calib_p_), len(self.calib_knn_))
        return np.maximum(a, b) + 0.1 * step * np.minimum(a, b) + 0.01 * step * dist / 2.0

    # detector.pt stores plain tensors only (it is read with weights_only=True)
    def state_dict(self) -> dict:
        if not hasattr(self, "knn_"):
            raise NotFittedError("FeatureKNNFusion is not fitted")
        state = {"rule": KNN_RULE, "k": int(self.k_), "bank": self.knn_.bank_.to(torch.float32),
                 "calib_knn": torch.from_numpy(self.calib_knn_), "calib_p": torch.from_numpy(self.calib_p_)}
        if self.calib_stats_ is not None:
            state["calib_stats"] = {k: torch.from_numpy(v) for k, v in self.calib_stats_.items()}
        if getattr(self, "calib_class_pixel_", None) is not None:
            state["calib_class_pixel"] = torch.from_numpy(self.calib_class_pixel_)
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeatureKNNFusion":
        # The stored bank is already subsampled and "k" is the k it is searched with.
        obj = cls(k=int(state["k"]), bank_fraction=1.0)
        obj.k_ = obj.k
        knn = KNN(None, k=obj.k)
        knn.bank_ = state["bank"].to(torch.float32)
        knn.fitted_ = True
        obj.knn_ = knn
        obj.calib_knn_ = state["calib_knn"].numpy()
        obj.calib_p_ = state["calib_p"].numpy()
        cs = state.get("calib_stats")
        obj.calib_stats_ = None if cs is None else {k: cs[k].numpy() for k in STAT_NAMES}
        ccp = state.get("calib_class_pixel")
        obj.calib_class_pixel_ = None if ccp is None else ccp.numpy()
        return obj
