import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodgen.metrics import MetricInputError, ood_metrics, threshold_at_tpr


def _reference(s_in, s_out):
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    conf = -np.r_[s_in, s_out]
    fpr, tpr, _ = roc_curve(y, conf)
    return {
        "auroc": 100 * roc_auc_score(y, conf),
        "aupr_in": 100 * average_precision_score(y, conf),
        "aupr_out": 100 * average_precision_score(1 - y, -conf),
        "fpr95": 100 * fpr[np.argmax(tpr >= 0.95)],
        "detection_error": 100 * np.min(0.5 * (1 - tpr) + 0.5 * fpr),
    }


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    s_in = rng.integers(0, 8, 300).astype(float)       # heavy ties
    s_out = rng.integers(3, 12, 200).astype(float)
    got, ref = ood_metrics(s_in, s_out), _reference(s_in, s_out)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k


def test_perfect_and_inverted_detectors():
    s_in, s_out = np.zeros(50), np.ones(70)
    m = ood_metrics(s_in, s_out)
    assert m["auroc"] == 100 and m["fpr95"] == 0 and m["detection_error"] == 0
    assert m["aupr_in"] == pytest.approx(100) and m["aupr_out"] == pytest.approx(100)
    inv = ood_metrics(s_out, s_in)
    assert inv["auroc"] == 0 and inv["fpr95"] == 100


def test_fpr95_by_hand():
    # 20 in-distribution scores 0..19; 95% TPR accepts scores <= 18.  OOD: 10 of 20 below 18.5.
    s_in = np.arange(20.0)
    s_out = np.r_[np.arange(10) + 0.5, np.arange(10) + 100]
    assert ood_metrics(s_in, s_out)["fpr95"] == pytest.approx(50.0)


def test_constant_scores_are_chance():
    m = ood_metrics(np.ones(10), np.ones(10))
    assert m["auroc"] == pytest.approx(50.0)
    assert m["fpr95"] == pytest.approx(100.0)


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf]), np.ones((2, 2))])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(MetricInputError):
        ood_metrics(bad, np.ones(3))
    with pytest.raises(MetricInputError):
        ood_metrics(np.ones(3), bad)


def test_threshold_accepts_95_percent():
    s = np.random.default_rng(0).normal(size=1000)
    t = threshold_at_tpr(s, 0.95)
    assert 0.95 <= np.mean(s <= t) <= 0.952
