"""The fused scores (beyond the paper): ``ood-class+knn`` and ``reject+knn`` (p(n+1) with a feature
KNN distance) and ``reject+fisher`` (with the CVAE statistics too)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oodgen.detectors.base import InputError
from oodgen.detectors.oodgen import SCORES
from oodgen.detectors.fusion import (CLASS_GUARD_RULE, FEATURE_RULE, FISHER_RULE, REJECT_RULE, RULE, RULES,
                                    FeatureKNNFusion)
from oodgen.generate import NotFittedError
from oodgen.metrics import ood_metrics


def auroc(a, b):
    return ood_metrics(a, b)["auroc"]


def _blobs(n, rng, shift=0.0):
    f = rng.normal(size=(n, 16)).astype(np.float32)
    f[:, 0] += 5.0 + shift        # in-distribution features point along e0
    return np.maximum(f, 0)


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    train, calib = _blobs(2000, rng), _blobs(300, rng)
    p_calib = rng.uniform(0, 0.1, 300)
    return FeatureKNNFusion(k=10).fit(train, calib, p_calib), rng


def test_flags_what_either_score_flags(fitted):
    fus, rng = fitted
    f_in, p_in = _blobs(500, rng), rng.uniform(0, 0.1, 500)
    # OOD of kind A: features like ID but p(n+1) high; kind B: p(n+1) low but features far away.
    f_a, p_a = _blobs(500, rng), rng.uniform(0.5, 1.0, 500)
    f_b = np.maximum(rng.normal(size=(500, 16)).astype(np.float32), 0)
    f_b[:, 1] += 5.0
    p_b = rng.uniform(0, 0.1, 500)
    s_in = fus.score(f_in, p_in)
    assert auroc(s_in, fus.score(f_a, p_a)) > 99.0
    assert auroc(s_in, fus.score(f_b, p_b)) > 99.0
    # each component alone misses one kind
    assert auroc(p_in, p_b) < 70.0


def test_monotone_in_each_component(fitted):
    fus, rng = fitted
    f, p = _blobs(200, rng), rng.uniform(0, 0.2, 200)
    base = fus.score(f, p)
    assert np.all(fus.score(f, np.minimum(p + 0.5, 1.0)) >= base)
    assert np.all(fus.score(f * 0.0, p) >= base)      # all-zero features: maximal KNN distance


def test_state_dict_round_trip(fitted):
    fus, rng = fitted
    f, p = _blobs(100, rng), rng.uniform(0, 1, 100)
    again = FeatureKNNFusion.from_state_dict(fus.state_dict())
    np.testing.assert_array_equal(again.score(f, p), fus.score(f, p))
    both = fus.score_all(f, p, (RULE, REJECT_RULE))   # one KNN search, the same scores as one rule at a time
    for rule in (RULE, REJECT_RULE):
        np.testing.assert_array_equal(both[rule], fus.score(f, p, rule))


def test_errors(fitted):
    fus, rng = fitted
    with pytest.raises(NotFittedError):
        FeatureKNNFusion().score(np.zeros((2, 16), np.float32), np.zeros(2))
    with pytest.raises(InputError, match="calibration"):
        FeatureKNNFusion(k=5).fit(_blobs(100, rng), _blobs(10, rng), np.zeros(10))
    with pytest.raises(InputError, match="probabilities"):
        fus.score(_blobs(5, rng), np.zeros(4))


def test_reject_rule_ranks_rejected_first_then_by_distance(fitted):
    fus, rng = fitted
    f = _blobs(400, rng)
    f[200:] = np.maximum(rng.normal(size=(200, 16)).astype(np.float32), 0)     # far from the bank
    p = rng.uniform(0, 1, 400)
    s = fus.score(f, p, REJECT_RULE)
    rejected = p > 0.5
    assert s[rejected].min() > s[~rejected].max()
    # among rejected images the order is p(n+1)'s; among accepted ones the KNN distance's
    assert np.array_equal(np.argsort(s[rejected], kind="stable"), np.argsort(p[rejected], kind="stable"))
    dist = fus.knn_.score_outputs(features=f)
    assert np.array_equal(np.argsort(s[~rejected], kind="stable"), np.argsort(dist[~rejected], kind="stable"))
    # in-distribution images the classifier accepts are never pushed up by p(n+1) < 0.5
    f_in = _blobs(300, rng)
    s_low = fus.score(f_in, np.full(300, 0.01), REJECT_RULE)
    s_mid = fus.score(f_in, np.full(300, 0.49), REJECT_RULE)
    np.testing.assert_array_equal(s_low, s_mid)
    assert not np.array_equal(fus.score(f_in, np.full(300, 0.01)), fus.score(f_in, np.full(300, 0.49)))
    with pytest.raises(ValueError, match="fusion rule"):
        fus.score(f_in, np.zeros(300), "max")


def _stats(n, rng, nll_shift=0.0, cx_shift=0.0, pix_shift=0.0):
    return {"nll": rng.normal(100.0 + nll_shift, 5.0, n), "nll-complexity": rng.normal(-50.0 + cx_shift, 5.0, n),
            "pixel-knn": rng.normal(0.5 + pix_shift, 0.05, n)}


@pytest.fixture
def fitted_stats():
    rng = np.random.default_rng(1)
    train, calib = _blobs(2000, rng), _blobs(400, rng)
    fus = FeatureKNNFusion(k=10).fit(train, calib, rng.uniform(0, 0.1, 400), _stats(400, rng),
                                     calib_class_pixel=np.random.default_rng(11).normal(0.6, 0.05, 400))
    return fus, rng


def test_fisher_rule_flags_what_any_statistic_flags(fitted_stats):
    fus, rng = fitted_stats
    n = 400
    f_in, p_in = _blobs(n, rng), rng.uniform(0, 0.1, n)
    s_in = fus.score(f_in, p_in, FISHER_RULE, _stats(n, rng))
    f_far = np.maximum(rng.normal(size=(n, 16)).astype(np.float32), 0)
    f_far[:, 1] += 5.0
    kinds = {"features far": (f_far, _stats(n, rng)),
             "high nll": (_blobs(n, rng), _stats(n, rng, nll_shift=40.0)),
             "high nll-complexity": (_blobs(n, rng), _stats(n, rng, cx_shift=40.0)),
             "high pixel-knn": (_blobs(n, rng), _stats(n, rng, pix_shift=0.4))}
    for kind, (f, st) in kinds.items():
        # (one saturated p-value of 1/401 against the sum of four: not quite 100)
        assert auroc(s_in, fus.score(f, rng.uniform(0, 0.1, n), FISHER_RULE, st)) > 97.0, kind
    # a set that no statistic separates is not separated either
    assert abs(auroc(s_in, fus.score(_blobs(n, rng), rng.uniform(0, 0.1, n), FISHER_RULE, _stats(n, rng))) - 50) < 8


def test_fisher_rule_rejects_first_and_is_monotone(fitted_stats):
    fus, rng = fitted_stats
    f, st = _blobs(300, rng), _stats(300, rng)
    p = rng.uniform(0, 1, 300)
    s = fus.score(f, p, FISHER_RULE, st)
    rejected = p > 0.5
    assert s[rejected].min() > s[~rejected].max()
    low = np.full(300, 0.01)
    base = fus.score(f, low, FISHER_RULE, st)
    np.testing.assert_array_equal(base, fus.score(f, np.full(300, 0.49), FISHER_RULE, st))
    for name in ("nll", "nll-complexity", "pixel-knn"):
        up = {**st, name: st[name] + 10.0}
        assert np.all(fus.score(f, low, FISHER_RULE, up) >= base)
    assert np.all(fus.score(f * 0.0, low, FISHER_RULE, st) >= base)
    # conformal p-values: an image above every calibration value of all three gets the largest score
    top = fus.score(f[:1] * 0.0, low[:1], FISHER_RULE, {k: np.array([1e6]) for k in st})
    assert top[0] >= s[~rejected].max()
    n_cal = len(fus.calib_knn_)
    f_max = 4 * np.log(n_cal + 1.0)
    assert top[0] == pytest.approx(f_max / (1 + f_max))


def test_feature_knn_rule_is_the_distance_alone(fitted):
    """The recommended rule ignores p(n+1): the k-th neighbour distance to the bank, nothing else."""
    fus, rng = fitted
    f = _blobs(30, rng)
    d = fus.distance(f)
    for p in (np.zeros(30), np.ones(30), rng.uniform(0, 1, 30)):
        np.testing.assert_array_equal(fus.score(f, p, FEATURE_RULE), d)
    far = fus.score(f + 100.0, np.zeros(30), FEATURE_RULE)
    assert np.all(far > d.max())


def test_fisher_rule_state_and_errors(fitted_stats, fitted):
    fus, rng = fitted_stats
    f, p, st = _blobs(50, rng), rng.uniform(0, 1, 50), _stats(50, rng)
    st["class-pixel-knn"] = np.random.default_rng(12).normal(0.6, 0.05, 50)
    again = FeatureKNNFusion.from_state_dict(fus.state_dict())
    np.testing.assert_array_equal(again.calib_class_pixel_, fus.calib_class_pixel_)
    all_rules = again.score_all(f, p, RULES, st)
    for rule in RULES:
        np.testing.assert_array_equal(all_rules[rule], fus.score(f, p, rule, st))
    with pytest.raises(InputError, match="image statistics"):
        fus.score(f, p, FISHER_RULE)
    with pytest.raises(InputError, match="nll-complexity"):
        fus.score(f, p, FISHER_RULE, {"nll": st["nll"]})
    with pytest.raises(InputError, match="50 scored images but 49"):
        fus.score(f, p, FISHER_RULE, {**st, "nll": st["nll"][:49]})
    with pytest.raises(InputError, match="non-finite"):
        fus.score(f, p, FISHER_RULE, {**st, "nll": np.full(50, np.nan)})
    plain, _ = fitted                     # fitted without statistics: the other rules still work
    with pytest.raises(NotFittedError, match="calibration statistics"):
        plain.score(f, p, FISHER_RULE, st)
    with pytest.raises(NotFittedError, match="class-conditional"):
        plain.score(f, p, CLASS_GUARD_RULE, st)
    with pytest.raises(InputError, match="class-pixel-knn"):
        fus.score(f, p, CLASS_GUARD_RULE, {k: v for k, v in st.items() if k != "class-pixel-knn"})
    assert "calib_stats" not in plain.state_dict() and "calib_class_pixel" not in plain.state_dict()
    assert FeatureKNNFusion.from_state_dict(plain.state_dict()).calib_stats_ is None


@pytest.mark.parametrize("rule", [RULE, REJECT_RULE, FISHER_RULE])
def test_run_records_fused_score_and_scoring_reproduces_it(tmp_path, rule, monkeypatch):
    from oodgen import data as D
    from oodgen import run as run_module
    from oodgen.config import RunConfig, Variant
    from oodgen.run import run
    from oodgen.score import load_detector
    # the evaluation computes the image statistics for accepted images and a sample of each OOD set
    # only: with a sample smaller than the sets, the rules must still match the scoring path below
    monkeypatch.setattr(run_module, "N_COMPONENT_SAMPLE", 100)
    cfg = RunConfig(id="mnist", profile="smoke", variant=Variant(score=rule))
    m = run(cfg, tmp_path, progress=False, log=lambda *_a: None)
    assert "sample of 100 images" in m["fisher_components_note"]
    assert m["score"] == rule
    assert set(m["ood_by_score"]) == set(SCORES)
    # the shipped feature-knn rule is the statistic fisher_components recorded before it was a rule
    assert m["ood_by_score"]["feature-knn"] == m["fisher_components"]["feature-knn"]
    assert m["ood"] == m["ood_by_score"][rule]
    assert set(m["fisher_components"]) == {"feature-knn", "nll", "nll-complexity", "pixel-knn"}
    assert set(m["fisher_components"]["pixel-knn"]) == set(m["ood"])
    assert all(np.isfinite(v["auroc"]) for v in m["ood"].values())
    det = load_detector(tmp_path)
    assert det.score_rule == rule
    x = D.load("uniform", "test", n=50, seed=0).images
    s = det.score(x)
    assert s.shape == (50,) and np.all(np.isfinite(s))
    scores, decisions, _ = det.evaluate(x)
    np.testing.assert_array_equal(scores, s)
    np.testing.assert_array_equal(decisions, s > det.threshold_)
    # the report recomputes the run's numbers from detector.pt with the fused rule
    from oodgen.metrics import ood_metrics as om
    from oodgen.report import run_scores
    s_in, s_out, used = run_scores(tmp_path)
    assert used == rule
    for name, scores in s_out.items():
        assert om(s_in, scores)["auroc"] == pytest.approx(m["ood"][name]["auroc"], abs=1e-6)
    if rule == FISHER_RULE:
        # a detector file without the parts the rule needs is refused with a clear message
        from oodgen.score import DetectorFileError
        blob = torch.load(tmp_path / "detector.pt", map_location="cpu", weights_only=False)
        for key, message in (("pixel_bank", "pixel bank"), ("cvae", "stored CVAE")):
            damaged = {k: v for k, v in blob.items() if k != key}
            torch.save(damaged, tmp_path / "damaged.pt")
            with pytest.raises(DetectorFileError, match=message):
                load_detector(tmp_path / "damaged.pt")


@pytest.mark.parametrize("rule", [RULE, FISHER_RULE])
def test_oodgen_estimator_fused_rule(rule):
    from oodgen.data import load
    from oodgen.detectors import OODGen
    tr = load("mnist", "train", n=400)
    det = OODGen(profile="smoke", score=rule).fit(tr.images, tr.labels)
    s = det.score(load("uniform", "test", n=30, seed=1).images)
    assert s.shape == (30,) and np.all(np.isfinite(s))
    with pytest.raises(ValueError, match="features"):
        from oodgen.detectors.oodgen import nplus1_scores
        nplus1_scores(torch.zeros(3, 11), "ood-class+knn")


def test_subsampled_bank_is_a_seeded_fraction_searched_with_scaled_k():
    from oodgen.detectors.knn import KNN
    rng = np.random.default_rng(5)
    train, calib, p = _blobs(2000, rng), _blobs(300, rng), rng.uniform(0, 0.1, 300)
    fus = FeatureKNNFusion(k=50, bank_fraction=0.1, seed=3).fit(train, calib, p)
    rows = fus.bank_indices(2000)
    assert len(rows) == 200 and fus.k_ == 5 and fus.knn_.bank_.shape == (200, 16)
    np.testing.assert_array_equal(rows, FeatureKNNFusion(bank_fraction=0.1, seed=3).bank_indices(2000))
    assert not np.array_equal(rows, FeatureKNNFusion(bank_fraction=0.1, seed=4).bank_indices(2000))
    q = _blobs(50, rng)
    ref = KNN(None, k=5).fit_outputs(features=train[rows]).score_outputs(features=q)
    np.testing.assert_allclose(fus.distance(q), ref)
    # features of the bank rows only (what OODGen.calibrate computes): the same detector
    pre = FeatureKNNFusion(k=50, bank_fraction=0.1, seed=3).fit(train[rows], calib, p, train_size=2000)
    np.testing.assert_array_equal(pre.distance(q), fus.distance(q))
    with pytest.raises(InputError, match="bank_indices"):
        FeatureKNNFusion(bank_fraction=0.1).fit(train, calib, p, train_size=2000)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="bank_fraction"):
            FeatureKNNFusion(bank_fraction=bad).fit(train, calib, p)
    # the stored k is the one the stored (already subsampled) bank is searched with
    again = FeatureKNNFusion.from_state_dict(fus.state_dict())
    assert again.k_ == 5
    np.testing.assert_array_equal(again.distance(q), fus.distance(q))


def test_full_bank_detector_state_keeps_its_bank_and_k():
    """A detector.pt written before banks were subsampled (55,000 rows, k = 50) scores as it did."""
    from oodgen.detectors.knn import KNN
    rng = np.random.default_rng(6)
    train, calib = _blobs(600, rng), _blobs(100, rng)
    old = KNN(None, k=50).fit_outputs(features=train)
    calib_knn = np.sort(old.score_outputs(features=calib))
    state = {"rule": RULE, "k": 50, "bank": old.bank_, "calib_knn": torch.from_numpy(calib_knn),
             "calib_p": torch.from_numpy(np.sort(rng.uniform(0, 0.1, 100)))}
    fus = FeatureKNNFusion.from_state_dict(state)
    q = _blobs(40, rng)
    np.testing.assert_allclose(fus.distance(q), old.score_outputs(features=q))
    assert fus.knn_.bank_.shape[0] == 600


def test_component_sample_is_seeded_and_bounded():
    from oodgen.run import component_sample
    a, b = component_sample(5000, seed=3, size=2000), component_sample(5000, seed=3, size=2000)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == bool and a.sum() == 2000
    assert not np.array_equal(a, component_sample(5000, seed=4, size=2000))
    assert component_sample(300, seed=0, size=2000).all()
