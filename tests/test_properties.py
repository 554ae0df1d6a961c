"""Property tests (hypothesis): metrics against scikit-learn, the IDX reader on arbitrary bytes."""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score, roc_auc_score

from oodgen.data.idx import IDXError, parse_idx, read_idx, write_idx
from oodgen.metrics import METRIC_NAMES, MetricInputError, ood_metrics, threshold_at_tpr

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Few distinct values: ties within and across the two sets are the common case.
tied = st.lists(st.integers(0, 5).map(float), min_size=1, max_size=40)
wide = st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=40)
scores = st.one_of(tied, wide)


def _labels_conf(s_in, s_out):
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return y, -np.r_[s_in, s_out]


@SETTINGS
@given(scores, scores)
def test_metrics_match_sklearn(s_in, s_out):
    m = ood_metrics(s_in, s_out)
    y, conf = _labels_conf(s_in, s_out)
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, conf), abs=1e-9)
    assert m["aupr_in"] == pytest.approx(100 * average_precision_score(y, conf), abs=1e-9)
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(1 - y, -conf), abs=1e-9)
    for k in METRIC_NAMES:
        assert 0.0 <= m[k] <= 100.0, (k, m[k])
    assert m["detection_error"] <= 50.0 + 1e-9          # the all-in threshold gives 50 %


@SETTINGS
@given(scores, scores)
def test_swapping_sets_complements_auroc(s_in, s_out):
    assert ood_metrics(s_out, s_in)["auroc"] == pytest.approx(100 - ood_metrics(s_in, s_out)["auroc"], abs=1e-9)


@SETTINGS
@given(st.floats(-1e3, 1e3, allow_nan=False), st.integers(1, 30), st.integers(1, 30))
def test_constant_scores(value, n_in, n_out):
    m = ood_metrics([value] * n_in, [value] * n_out)
    assert m["auroc"] == 50.0
    assert m["fpr95"] == 100.0
    assert m["detection_error"] == 50.0
    assert m["aupr_in"] == pytest.approx(100 * n_in / (n_in + n_out))
    assert m["aupr_out"] == pytest.approx(100 * n_out / (n_in + n_out))


@pytest.mark.parametrize("s_in, s_out, auroc, fpr95", [
    (0.0, 1.0, 100.0, 0.0), (1.0, 0.0, 0.0, 100.0), (0.5, 0.5, 50.0, 100.0)])
def test_single_elements(s_in, s_out, auroc, fpr95):
    m = ood_metrics([s_in], [s_out])
    assert m["auroc"] == auroc and m["fpr95"] == fpr95


@SETTINGS
@given(scores, scores, st.data())
def test_nan_and_inf_refused(s_in, s_out, data):
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    which = data.draw(st.booleans())
    target = list(s_in if which else s_out)
    target.insert(data.draw(st.integers(0, len(target))), bad)
    with pytest.raises(MetricInputError, match="NaN/Inf"):
        ood_metrics(target, s_out) if which else ood_metrics(s_in, target)


@pytest.mark.parametrize("s_in, s_out", [([], [1.0]), ([1.0], []), ([[1.0]], [1.0])])
def test_empty_or_2d_refused(s_in, s_out):
    with pytest.raises(MetricInputError):
        ood_metrics(s_in, s_out)


@SETTINGS
@given(tied, st.floats(0.01, 1.0))
def test_threshold_accepts_at_least_tpr(s_in, tpr):
    t = threshold_at_tpr(s_in, tpr)
    assert np.mean(np.asarray(s_in) <= t) >= tpr - 1e-12
    assert t in s_in


# ----------------------------------------------------------------------------- IDX

# Random bytes, and random bytes behind a plausible header, so the parser's deeper checks run.
def _headed(draw_bytes):
    return st.builds(lambda t, nd, dims, rest: bytes([0, 0, t, nd]) + b"".join(d.to_bytes(4, "big") for d in dims) + rest,
                     st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
                     st.integers(0, 6),
                     st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2 ** 32 - 1)), max_size=6),
                     draw_bytes)


idx_bytes = st.one_of(st.binary(max_size=200), _headed(st.binary(max_size=200)))


@SETTINGS
@given(idx_bytes)
def test_parse_idx_raises_only_idxerror(raw):
    try:
        arr = parse_idx(raw)
    except IDXError:
        return
    assert isinstance(arr, np.ndarray) and arr.ndim == raw[3]


@SETTINGS
@given(idx_bytes, st.booleans(), st.integers(0, 40))
# found by hypothesis: an empty array (one dimension 0) whose other dimensions overflow numpy
@example(raw=b"\x00\x00\x08\x04\x00\x00\x00\x00\x00\x00\xbc(\x00\x00\xbd4\xeb\xa3\x00\x00", compress=False, cut=0)
def test_read_idx_raises_only_idxerror(raw, compress, cut):
    data = gzip.compress(raw) if compress else raw
    if compress and cut:
        data = data[:-cut]                       # truncated gzip stream
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("f.gz" if compress else "f")
        path.write_bytes(data)
        try:
            read_idx(path)
        except IDXError:
            pass


@SETTINGS
@given(arrays(np.uint8, st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple)), st.booleans())
def test_idx_round_trip(arr, compress):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("a-ubyte.gz" if compress else "a-ubyte")
        write_idx(path, arr)
        back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
