"""OOD detection metrics of the paper's appendix C, in percent.

Conventions: scores are "higher = more OOD"; in-distribution is the positive class for TPR
(so a threshold t accepts x as in-distribution when score(x) <= t).  Built on scikit-learn's
curves; the conventions follow the reference ``calculate_log.py`` of the Mahalanobis code:

* ``fpr95``: FPR at the ROC operating point whose TPR is the smallest >= 95 %
  (interpolation-free; the 95 % point is reached or exceeded);
* ``detection_error``: min over thresholds of 0.5 * (FNR + FPR) (equal priors);
* ``auroc``: area under the ROC curve;
* ``aupr_in``: average precision with in-distribution as positive;
* ``aupr_out``: average precision with OOD as positive.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

METRIC_NAMES = ("fpr95", "detection_error", "auroc", "aupr_in", "aupr_out")


class MetricInputError(ValueError):
    """Scores given to a metric are empty, non-finite or of the wrong shape."""


def _as_scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise MetricInputError(f"{name} scores must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricInputError(f"{name} scores are empty: need at least one sample of each class")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise MetricInputError(f"{name} scores contain {int(bad.sum())} NaN/Inf values (first at index {int(np.argmax(bad))})")
    return arr


def ood_metrics(scores_in, scores_out) -> dict[str, float]:
    """All five metrics, in percent, for in-distribution and OOD scores (higher = more OOD)."""
    s_in = _as_scores(scores_in, "in-distribution")
    s_out = _as_scores(scores_out, "OOD")
    y_in = np.concatenate([np.ones_like(s_in), np.zeros_like(s_out)])
    # In-distribution positive: its "positiveness" is the negated OOD score.
    conf = -np.concatenate([s_in, s_out])
    fpr, tpr, _ = roc_curve(y_in, conf)
    idx = int(np.searchsorted(tpr, 0.95, side="left"))
    fpr95 = float(fpr[min(idx, len(fpr) - 1)])
    det_err = float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))
    return {
        "fpr95": 100.0 * fpr95,
        "detection_error": 100.0 * det_err,
        "auroc": 100.0 * float(roc_auc_score(y_in, conf)),
        "aupr_in": 100.0 * float(average_precision_score(y_in, conf)),
        "aupr_out": 100.0 * float(average_precision_score(1 - y_in, -conf)),
    }


def roc_points(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve with in-distribution positive, for plotting."""
    s_in = _as_scores(scores_in, "in-distribution")
    s_out = _as_scores(scores_out, "OOD")
    y = np.concatenate([np.ones_like(s_in), np.zeros_like(s_out)])
    fpr, tpr, _ = roc_curve(y, -np.concatenate([s_in, s_out]))
    return fpr, tpr


def threshold_at_tpr(scores_in, tpr: float = 0.95) -> float:
    """The score threshold that accepts a fraction ``tpr`` of in-distribution samples
    (samples with score <= threshold are called in-distribution)."""
    s_in = _as_scores(scores_in, "in-distribution")
    if not 0.0 < tpr <= 1.0:
        raise MetricInputError(f"tpr must be in (0, 1], got {tpr}")
    return float(np.quantile(s_in, tpr, method="higher"))
