"""The selection protocol (docs/protocol.md, ``oodgen select``) and the recommended score it picks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oodgen import data as D
from oodgen import selection as S
from oodgen.config import RECOMMENDED, SCORE_ALIASES, RunConfig, Variant, resolve_score
from oodgen.detectors.oodgen import SCORES, OODGen


def test_resolve_score():
    assert resolve_score("recommended", "fmnist") == RECOMMENDED
    assert resolve_score("paper", "mnist") == "ood-class" and resolve_score("paper", "mnist0-4") == "max-in"
    assert resolve_score("reject+knn", "mnist0-4") == "reject+knn"
    assert Variant().score == "recommended" and RECOMMENDED in SCORES and SCORE_ALIASES == ("recommended", "paper")


def test_shifted_images():
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(S.shifted(x, "invert", 0), 1.0 - x)
    sh = S.shifted(x, "pixel-shuffle", 0)
    # each image keeps its own intensities, in another order, and the images are shuffled differently
    assert torch.equal(sh.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(sh, x)
    order = [torch.argsort(torch.argsort(sh[i].flatten())) for i in range(2)]
    assert not torch.equal(order[0], order[1])
    assert torch.equal(S.shifted(x, "pixel-shuffle", 0), sh)             # seeded
    with pytest.raises(ValueError, match="unknown shift"):
        S.shifted(x, "blur", 0)


def _record(setting, recipe, c, aurocs: dict[str, float]) -> dict:
    metrics = {name: {sig: {"auroc": aurocs.get(name, 90.0)} for sig in S.SIGNALS} for name in S.CANDIDATE_SCORES}
    return {"id": setting, "recipe": recipe, "held_out_class": c, "metrics": metrics}


def test_decide_worst_case_then_fastest():
    speeds = {name: 1000.0 for name in S.CANDIDATE_SCORES}
    speeds.update({"reject+fisher": 100.0, "reject+knn": 500.0})
    records = [_record("mnist", r, 0, {"reject+fisher": 99.0, "reject+knn": 98.9, "ood-class": 99.5})
               for r in S.RECIPES]
    # a blind spot on one signal of one fold sinks the mean-best candidate (p(n+1))
    records[0]["metrics"]["ood-class"]["invert"]["auroc"] = 2.0
    records[1]["metrics"]["ood-class"]["invert"]["auroc"] = 2.0
    d = S.decide(records, speeds)
    assert d["candidates"]["ours/ood-class"]["worst"] == 2.0
    assert d["candidates"]["ours/ood-class"]["worst_signal"] == "mnist/class0/invert"
    assert d["best_worst"] == 99.0
    # reject+knn is within 0.2 points and faster: it wins; the two recipes tie, so ours
    assert set(d["within_tie"]) == {"ours/reject+fisher", "authors/reject+fisher", "ours/reject+knn",
                                    "authors/reject+knn"}
    assert d["winner"] == "ours/reject+knn" and d["score"] == "reject+knn" and d["recipe"] == "ours"
    # 0.3 points below is outside the tie: the slower, better one wins
    for r in records:
        r["metrics"]["reject+knn"]["held-out"]["auroc"] = 98.7
    assert S.decide(records, speeds)["winner"] == "ours/reject+fisher"
    assert "**winner**" in S.decision_markdown(S.decide(records, speeds))


def test_strokes_are_seeded_ink_on_black():
    from oodgen.data.strokes import strokes
    x = strokes(50, size=28, seed=3)
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) <= 1.0
    ink = (x > 0.5).flatten(1).float().mean(1)
    assert bool((ink > 0.005).all()) and bool((ink < 0.5).all())        # every image has a stroke, none is a blot
    assert torch.equal(strokes(50, 28, seed=3), x) and not torch.equal(strokes(50, 28, seed=4), x)
    assert strokes(7, size=40, seed=0).shape == (7, 1, 40, 40)
    with pytest.raises(ValueError):
        strokes(5, size=2)


def test_pixel_guard_ranks_far_images_first_and_keeps_the_feature_order():
    from types import SimpleNamespace
    from oodgen.detectors.fusion import guard_threshold, pixel_guard_score
    calib = np.sort(np.arange(1.0, 201.0))                     # 200 calibration distances 1..200
    assert guard_threshold(calib, 1.0) == 200.0 and guard_threshold(calib, 0.995) == 199.0
    with pytest.raises(ValueError):
        guard_threshold(calib, 0.0)
    fusion = SimpleNamespace(calib_stats_={"pixel-knn": calib})
    dist = np.array([5.0, 1.0, 3.0, 0.5, 9.0])
    pixel = np.array([10.0, 250.0, 20.0, 300.0, 199.5])
    s = pixel_guard_score(fusion, dist, pixel, 1.0)
    # the two images beyond the largest calibration distance first, the farther one on top; the rest by dist
    assert list(np.argsort(-s)) == [3, 1, 4, 0, 2]
    assert list(np.argsort(-pixel_guard_score(fusion, dist, pixel, 0.995)))[:3] == [3, 1, 4]
    with pytest.raises(Exception, match="calibration"):
        pixel_guard_score(SimpleNamespace(calib_stats_=None), dist, pixel, 1.0)



def test_round3_fusions_of_the_feature_and_pixel_distances():
    from types import SimpleNamespace
    from oodgen.detectors.fusion import pixel_fisher_score, pixel_max_score
    calib = np.arange(1.0, 101.0)                                  # 100 calibration values of each distance
    fusion = SimpleNamespace(calib_knn_=calib, calib_stats_={"pixel-knn": calib * 10})
    dist = np.array([50.0, 99.5, 10.0, 200.0, 50.0])
    pixel = np.array([500.0, 100.0, 996.0, 10.0, 990.0])
    m = pixel_max_score(fusion, dist, pixel)
    # flag if either flags: images 1, 2 and 4 share the larger percentile (99 %); the smaller one puts image 4
    # (50 %) above 1 and 2 (10 % each), whose tie the relative distances break (996 / 1000 > 99.5 / 100);
    # image 3, beyond every calibration feature distance, on top
    assert list(np.argsort(-m)) == [3, 4, 2, 1, 0]
    f = pixel_fisher_score(fusion, dist, pixel)
    # both moderately far (percentiles 50 / 99) beats one far, one near; Fisher is symmetric in its inputs
    assert f[4] > f[0] and np.all(np.diff(pixel_fisher_score(fusion, np.array([1.0, 50.0, 100.0]),
                                                             np.array([10.0, 10.0, 10.0]))) > 0)
    np.testing.assert_allclose(pixel_fisher_score(fusion, np.array([30.0]), np.array([700.0])),
                               pixel_fisher_score(fusion, np.array([70.0]), np.array([300.0])), atol=1e-5)
    # beyond every calibration value, the ties are broken by the relative distances, not left flat
    assert pixel_fisher_score(fusion, np.array([300.0]), np.array([3000.0]))[0] > \
        pixel_fisher_score(fusion, np.array([200.0]), np.array([2000.0]))[0]


def test_class_pixel_bank_measures_against_the_given_class():
    from oodgen.detectors.image_stats import ClassPixelBank
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(40, 1, 8, 8)
    x[:20, :, :, :4] = 1.0                                           # class 0: left half lit
    x[20:, :, :, 4:] = 1.0                                           # class 1: right half lit
    x = (x + 0.05 * torch.rand(40, 1, 8, 8, generator=g)).clamp(0, 1)
    y = np.array([0] * 20 + [1] * 20)
    bank = ClassPixelBank.from_training_set(x, y, seed=0)
    probe = x[:2]
    own, other = bank.distance(probe, [0, 0]), bank.distance(probe, [1, 1])
    assert np.all(other > own + 0.5)                                 # a left-half image is far from class 1
    assert sorted(bank.banks) == [0, 1] and bank.banks[0].k == 1      # k scaled from 50 in 30,000
    with pytest.raises(ValueError, match="no bank"):
        bank.distance(probe, [0, 5])
    with pytest.raises(ValueError, match="labels"):
        ClassPixelBank.from_training_set(x, y[:5], seed=0)


def test_leave_one_out_distances_and_per_class_bars():
    from oodgen.detectors.fusion import class_max_scales, class_ratio
    from oodgen.detectors.image_stats import ClassPixelBank, PixelBank
    g = torch.Generator().manual_seed(1)
    x = torch.rand(30, 1, 6, 6, generator=g)
    bank = PixelBank(x, k=3)
    # brute force: each image's distance to its 3rd nearest other image, on the stored 8-bit, L2-normalised pixels
    f = bank.images.to(torch.float64)
    f = f / f.norm(dim=1, keepdim=True)
    d = torch.cdist(f, f)
    d.fill_diagonal_(float("inf"))
    assert np.allclose(bank.self_distances(batch_size=7), d.sort(1).values[:, 2].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no k-th other"):
        PixelBank(x[:3], k=3).self_distances()
    y = np.array([0] * 15 + [1] * 15)
    cb = ClassPixelBank.from_training_set(x, y, seed=0)
    loo = cb.loo_max()
    assert sorted(loo) == [0, 1] and all(v > 0 for v in loo.values())
    # @class-max: the largest distance among the calibration images assigned to each class; unknown classes fall back
    scales = class_max_scales([1.0, 3.0, 2.0, 0.5], [0, 0, 1, 1])
    assert scales == {0: 3.0, 1: 2.0}
    r = class_ratio([3.0, 3.0, 3.0], [0, 1, 7], scales, fallback=6.0)
    assert np.allclose(r, [1.0, 1.5, 0.5])
    with pytest.raises(Exception, match="labels"):
        class_ratio([1.0], [0, 1], scales, 1.0)
    with pytest.raises(ValueError, match="positive"):
        class_ratio([1.0], [0], {0: 0.0}, 1.0)

def _record2(recipe, c, values: dict[str, list[float]]) -> dict:
    """A round-2 fold record: each score's AUROCs on the 4 signals (default 90 everywhere)."""
    metrics = {name: {sig: {"auroc": values.get(name, [90.0] * 4)[i]} for i, sig in enumerate(S.ROUND_SIGNALS[2])}
               for name in S.ROUND_SCORES[2]}
    return {"id": "mnist", "recipe": recipe, "held_out_class": c, "metrics": metrics}


def test_leximin_lets_the_second_worst_decide_a_shared_worst_case():
    speeds = {name: 1000.0 for name in S.ROUND_SCORES[2]}
    speeds["feature-knn"] = 5000.0                              # the fastest: round 1's criterion picks it
    guard = "feature-knn+pixel-guard@max"
    vals = {"feature-knn": [70.0, 99.0, 100.0, 93.0], guard: [69.9, 99.0, 100.0, 99.0],
            "ood-class": [75.0, 2.0, 100.0, 99.0]}
    records = [_record2(r, 0, vals) for r in S.RECIPES]
    # every other candidate has a blind spot (50 on the held-out class)
    for r in records:
        for name in S.ROUND_SCORES[2]:
            if name not in vals:
                r["metrics"][name]["held-out"]["auroc"] = 50.0
    d = S.decide_leximin(records, speeds)
    assert d["steps"][0]["rank"] == 1 and "ours/ood-class" in d["steps"][0]["removed"]
    # feature-knn and the guard tie at rank 1 (70.0 vs 69.9) and rank 2 sifts: 93 vs 99
    assert d["winner"] == f"ours/{guard}" and d["score"] == guard
    assert d["round1_criterion"] == "ours/feature-knn"
    assert "rank 2" in S.decision_markdown(d) and "**winner**" in S.decision_markdown(d)


def _record6(recipe, round_, scores_round, held_out: float) -> dict:
    """A fold record of round ``round_`` holding round ``scores_round``'s scores: ``held_out`` on the held-out
    class for every score, 90 on the other signals."""
    metrics = {name: {sig: {"auroc": held_out if sig == "held-out" else 90.0} for sig in S.ROUND_SIGNALS[3]}
               for name in S.ROUND_SCORES[scores_round]}
    return {"id": "mnist", "recipe": recipe, "held_out_class": 0, "round": round_, "scores_round": scores_round,
            "metrics": metrics, "accuracy_in": 99.0}


def test_round6_a_retrained_winner_must_beat_the_retraining_noise():
    speeds = {name: 1000.0 for name in S.ROUND_SCORES[6]}
    records = [_record6("ours", 5, 5, 70.0), _record6("authors", 5, 5, 69.0),
               _record6("ours+patch-shuffle", 4, 4, 68.0), _record6("ours+cosine", 6, 3, 75.0)]
    # the control moves the shipped rule by 2 points on the held-out class: the cosine head's 5 points stand
    d = S.decide_round6(records, [_record6(S.CONTROL_RECIPE, 6, 3, 72.0)], speeds)
    c = d["noise_check"]
    assert d["recipe"] == "ours+cosine" and c["passed"] and c["rank"] == 1
    assert c["signal"] == "mnist/class0/held-out" and c["margin"] == pytest.approx(5.0) and c["noise"] == 2.0
    assert d["noise"]["mnist/class0/held-out"]["ours+cosine change"] == pytest.approx(5.0)
    assert d["noise"]["mnist/class0/held-out"]["ours+patch-shuffle change"] == pytest.approx(-2.0)
    # 6 points of noise: the 5-point margin is within it, and the round-5 candidates' winner stands
    d = S.decide_round6(records, [_record6(S.CONTROL_RECIPE, 6, 3, 64.0)], speeds)
    assert not d["noise_check"]["passed"] and d["recipe"] == "ours" and d["winner"] == d["round5_candidates_winner"]
    assert d["leximin_winner"].startswith("ours+cosine/")
    md = S.decision_markdown(d)
    assert "within the noise" in md and "| mnist/class0/held-out | 70.00 | 64.00 | 6.00 |" in md
    # the cosine head behind: the rule does not apply, and the leximin winner is of round 5's candidates
    records[-1] = _record6("ours+cosine", 6, 3, 60.0)
    d = S.decide_round6(records, [_record6(S.CONTROL_RECIPE, 6, 3, 72.0)], speeds)
    assert not d["noise_check"]["applies"] and d["recipe"] == "ours"
    assert {v["recipe"] for v in d["candidates"].values()} == {"ours", "authors", "ours+patch-shuffle", "ours+cosine"}
    assert not any(k.startswith("ours+cosine/") and k.endswith(S.ROUND5_RULES) for k in d["candidates"])


def test_score_speeds_from_committed_benchmark():
    speeds = S.score_speeds("benchmarks/results/rules.json")
    assert set(speeds) == set(S.ROUND_SCORES[5])
    # the same stages (docs/protocol.md)
    assert all(speeds[r] == speeds[S.LITE_RULE] for r in S.ROUND3_RULES + S.ROUND5_RULES)
    # the lite Fisher rule skips the CVAE pass and zlib: faster than reject+fisher, slower than reject+knn
    assert speeds["reject+fisher"] < speeds[S.LITE_RULE] < speeds["reject+knn"]


@pytest.fixture
def train_split_only(monkeypatch):
    """Any read beyond MNIST's training split fails the test; 40 held-out images per fold."""
    real_load = D.load

    def train_only(name, split="train", *a, **k):
        assert (name, split) in (("mnist", "train"),), f"the protocol read {name}/{split}"
        return real_load(name, split, *a, **k)

    monkeypatch.setattr(D, "load", train_only)
    monkeypatch.setattr(S, "N_HELD_OUT", 40)


def test_fold_reads_no_test_data_and_scores_every_candidate(tmp_path, monkeypatch, train_split_only):
    rec = S.run_fold("mnist", "ours", 3, tmp_path, profile="smoke", log=lambda *_: None)
    path = S.fold_path(tmp_path, "mnist", "ours", 3, "smoke")
    assert path.exists() and path.with_name(path.stem + "-type2.png").exists()
    assert json.loads(path.read_text())["metrics"] == rec["metrics"]
    assert set(rec["metrics"]) == set(S.CANDIDATE_SCORES)
    for name, signals in rec["metrics"].items():
        assert set(signals) == set(S.SIGNALS)
        assert all(0 <= m["auroc"] <= 100 for m in signals.values()), name
    assert rec["n_held_out"] == 40 and abs(rec["n_in"] - rec["n_calibration"]) <= 1
    assert rec["n_train"] < 600 and "no test split" in rec["note"]
    # a floor, not a value: pixel shuffling destroys the digits, which the feature KNN sees even at smoke size
    assert rec["metrics"]["feature-knn"]["pixel-shuffle"]["auroc"] > 80
    # finished folds are read back, not trained again
    monkeypatch.setattr(S, "OODGen", None)
    assert S.run_fold("mnist", "ours", 3, tmp_path, profile="smoke", log=lambda *_: None) == rec


def _rescored(rec: dict, earlier: dict, round_: int, kept_round: int, new_rules, tmp_path) -> None:
    """``rec``, round ``round_``'s rescoring of a fold, lies in its round's folder, scores every candidate of the
    round, gives round ``kept_round``'s candidates the numbers of ``earlier`` and its new rules AUROCs in range."""
    assert S.fold_path(tmp_path, "mnist", "ours", 2, "smoke", round_=round_).parent.name == f"round{round_}"
    assert set(rec["metrics"]) == set(S.ROUND_SCORES[round_]) and rec["rescored_checkpoint"]
    for name in S.ROUND_SCORES[kept_round]:
        for sig in S.ROUND_SIGNALS[kept_round]:
            assert rec["metrics"][name][sig]["auroc"] == pytest.approx(earlier["metrics"][name][sig]["auroc"], abs=1e-6)
    for name in new_rules:
        assert all(0 <= m["auroc"] <= 100 for m in rec["metrics"][name].values()), name


def test_round_two_rescores_round_one_checkpoints(tmp_path, train_split_only):
    quiet = {"profile": "smoke", "ckpt_dir": tmp_path / "ckpt", "log": lambda *_: None}
    one = S.run_fold("mnist", "ours", 2, tmp_path, **quiet)
    two = S.run_fold("mnist", "ours", 2, tmp_path, round_=2, **quiet)
    path = S.fold_path(tmp_path, "mnist", "ours", 2, "smoke", round_=2)
    assert path.parent.name == "round2" and path.exists() and two["round"] == 2
    assert two["rescored_checkpoint"] and not one["rescored_checkpoint"]
    assert set(two["metrics"]) == set(S.ROUND_SCORES[2]) and "strokes" in S.ROUND_SIGNALS[2]
    for name in S.ROUND_SCORES[2]:
        assert set(two["metrics"][name]) == set(S.ROUND_SIGNALS[2]), name
    # the same detector: round 1's candidates score round 1's signals exactly as before
    for name in S.CANDIDATE_SCORES:
        for sig in S.SIGNALS:
            assert two["metrics"][name][sig]["auroc"] == pytest.approx(one["metrics"][name][sig]["auroc"], abs=1e-6)
    # round 3: the same detector again, three more candidates, round 2's numbers unchanged
    three = S.run_fold("mnist", "ours", 2, tmp_path, round_=3, **quiet)
    _rescored(three, two, 3, 2, S.ROUND3_RULES, tmp_path)
    # round 4: the n+1 classifier trained again with the patch-shuffle pool, on round 1's CVAE of the fold
    with pytest.raises(ValueError, match="ckpt-dir"):
        S.run_fold("mnist", "ours+patch-shuffle", 2, tmp_path, round_=4, profile="smoke", log=lambda *_: None)
    four = S.run_fold("mnist", "ours+patch-shuffle", 2, tmp_path, round_=4, **quiet)
    path4 = S.fold_path(tmp_path, "mnist", "ours+patch-shuffle", 2, "smoke", round_=4)
    assert path4.parent.name == "round4" and path4.exists()
    assert four["variant"] == {"beta": "wide", "clip_type1": "half", "extra_outliers": "patch-shuffle", "head": "linear"}
    src, dest = (tmp_path / "ckpt" / p.stem for p in (S.fold_path(tmp_path, "mnist", "ours", 2, "smoke"), path4))
    assert four["cvae_from"] == src.name and (dest / "cvae.pt").read_bytes() == (src / "cvae.pt").read_bytes()
    assert (dest / "nplus1.pt").read_bytes() != (src / "nplus1.pt").read_bytes()      # trained again
    assert set(four["metrics"]) == set(S.ROUND_SCORES[4])
    d = S.decide_leximin([three, four], {k: 1000.0 for k in S.ROUND_SCORES[4]}, 4)
    assert {v["recipe"] for v in d["candidates"].values()} == {"ours", "ours+patch-shuffle"}
    assert d["round3_candidates_winner"].startswith("ours/")
    # round 5: round 1's detector rescored again, two per-class bars beside every earlier score
    five = S.run_fold("mnist", "ours", 2, tmp_path, round_=5, **quiet)
    _rescored(five, three, 5, 3, S.ROUND5_RULES, tmp_path)
    # round 4's records hold no round-5 score: the retrained recipe competes with the scores it has
    d5 = S.decide_leximin([five, four], {k: 1000.0 for k in S.ROUND_SCORES[5]}, 5)
    assert {f"ours/{r}" for r in S.ROUND5_RULES} <= set(d5["candidates"])
    assert not any(f"ours+patch-shuffle/{r}" in d5["candidates"] for r in S.ROUND5_RULES)
    assert len(d5["candidates"]) == 2 * len(S.ROUND_SCORES[4]) + len(S.ROUND5_RULES)
    assert "round4_candidates_winner" in d5 and "round 4's candidates alone" in S.decision_markdown(d5)
    # round 6: the n+1 classifier trained again with a cosine head, and again with another seed (the control)
    six = S.run_fold("mnist", "ours+cosine", 2, tmp_path, round_=6, **quiet)
    ctl = S.run_fold("mnist", S.CONTROL_RECIPE, 2, tmp_path, round_=6, **quiet)
    assert six["variant_full"]["head"] == "cosine" and "nplus1_seed" not in six
    assert ctl["variant"] == {"beta": "wide", "clip_type1": "half", "head": "linear"}
    assert ctl["nplus1_seed"] == S.CONTROL_NPLUS1_SEED
    assert six["scores_round"] == ctl["scores_round"] == 3 and set(six["metrics"]) == set(S.ROUND_SCORES[3])
    for rec, recipe in ((six, "ours+cosine"), (ctl, S.CONTROL_RECIPE)):
        dest = tmp_path / "ckpt" / S.fold_path(tmp_path, "mnist", recipe, 2, "smoke", round_=6).stem
        assert rec["cvae_from"] == src.name and (dest / "cvae.pt").read_bytes() == (src / "cvae.pt").read_bytes()
        assert (dest / "nplus1.pt").read_bytes() != (src / "nplus1.pt").read_bytes()
    # the control keeps the CVAE, split and banks: the pixel KNN statistic is the same, p(n+1) is not
    for sig in S.ROUND_SIGNALS[3]:
        assert ctl["metrics"]["pixel-knn"][sig]["auroc"] == pytest.approx(five["metrics"]["pixel-knn"][sig]["auroc"])
    assert any(ctl["metrics"]["ood-class"][sig]["auroc"] != five["metrics"]["ood-class"][sig]["auroc"]
               for sig in S.ROUND_SIGNALS[3])
    d6 = S.decide_round6([five, four, six], [ctl], {k: 1000.0 for k in S.ROUND_SCORES[6]})
    assert set(d6["noise"]) == {f"mnist/class2/{sig}" for sig in S.ROUND_SIGNALS[3]}
    assert "Retraining noise" in S.decision_markdown(d6)
    with pytest.raises(ValueError, match="round"):
        S.select(tmp_path, round_=7)
    with pytest.raises(ValueError, match="--round 6"):
        S.select(tmp_path / "fresh", round_=5, ckpt_dir=tmp_path / "ckpt", retrained=[S.CONTROL_RECIPE])
    with pytest.raises(ValueError, match="unknown"):
        S.select(tmp_path / "fresh", round_=6, ckpt_dir=tmp_path / "ckpt", retrained=["ours+other"])
    for r in (4, 5, 6):                                       # refused before any folder is made
        with pytest.raises(ValueError, match="ckpt-dir"):
            S.select(tmp_path / "fresh", round_=r)
    assert not (tmp_path / "fresh").exists()


def test_score_all_matches_each_rule(mnist_small):
    tr, te = mnist_small
    det = OODGen(profile="smoke", score="reject+fisher", seed=0).fit(tr.images, tr.labels)
    x = np.concatenate([te.images[:60], D.load("uniform", "test", n=20, seed=0).images])
    every = det.score_all(x, components=True)
    assert set(every) == set(SCORES) | {"feature-knn", "nll", "nll-complexity", "pixel-knn", "class-pixel-knn"}
    np.testing.assert_allclose(every["reject+fisher"], det.score(x))
    for rule in SCORES:
        np.testing.assert_allclose(det.score_all(x, (rule,))[rule], det.set_params(score=rule).score(x))
    assert det.set_params(score="recommended").score(x).shape == (80,)
    np.testing.assert_allclose(det.set_params(score="paper").score(x), every["ood-class"])
    with pytest.raises(ValueError, match="unknown score"):
        det.score_all(x, ("fisher",))


def test_fit_save_load_gives_the_same_detector(mnist_small, tmp_path):
    """One object from fit to disk and back: the loaded detector is an OODGen, scores every rule, every
    statistic and the in-distribution classes identically, and keeps every rule's threshold."""
    from oodgen.artifact import DetectorFileError
    from oodgen.score import load_detector
    tr, te = mnist_small
    det = OODGen(profile="smoke", seed=0).fit(tr.images, tr.labels)
    x = np.concatenate([te.images[:60], D.load("uniform", "test", n=20, seed=0).images])
    path = det.save(tmp_path / "d")
    assert path == tmp_path / "d" / "detector.pt"
    back = OODGen.load(tmp_path / "d")
    assert type(back) is OODGen and type(load_detector(tmp_path / "d")) is OODGen
    assert back.resolved_score() == det.resolved_score() == RECOMMENDED
    want, got = det.score_all(x, components=True), back.score_all(x, components=True)
    assert set(got) == set(want)
    for rule in want:
        np.testing.assert_array_equal(got[rule], want[rule], err_msg=rule)
    assert back.thresholds_ == det.thresholds_ and back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.predict(x), det.predict(x))
    np.testing.assert_array_equal(back.predict_class(x), det.predict_class(x))
    for rule in ("paper", "reject+fisher"):
        np.testing.assert_array_equal(OODGen.load(path, rule).score(x), det.set_params(score=rule).score(x))
    # what a loaded detector cannot do says so (the ellipsoids are training-only)
    with pytest.raises(Exception, match="ellipsoids"):
        back.generated_panel(te.images[:10], te.labels[:10])
    with pytest.raises(DetectorFileError, match="no trained detector"):
        OODGen.load(tmp_path / "nothing")
    import copy
    uncalibrated = copy.copy(det)          # fit calibrates only with enough images (MIN_CALIBRATION)
    uncalibrated.fusion_ = None
    with pytest.raises(Exception, match="calibrate"):
        uncalibrated.save(tmp_path / "t")


def test_a_run_written_with_another_score_resumes(tmp_path):
    """The primary score is evaluation only: a run directory resumes under another --score."""
    from oodgen.run import _check_config
    _check_config(tmp_path, RunConfig(id="mnist", profile="smoke", variant=Variant(score="paper")))
    _check_config(tmp_path, RunConfig(id="mnist", profile="smoke"))          # no RunError
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["variant"]["score"] == "paper" and stored["score_paper"] == "ood-class"


def test_the_default_is_the_committed_decision():
    """RECOMMENDED and the default head are what the committed round-6 protocol run chose, and a shipped rule; each
    committed decision (rounds 1, 2, 3 and 6) is what `oodgen select` derives again from its committed folds."""
    from pathlib import Path
    from oodgen.selection import decide, decide_leximin, score_speeds
    repo = Path(__file__).resolve().parents[1]
    sel = repo / "results" / "selection"
    for folder, rule in ((sel, decide), (sel / "round2", decide_leximin), (sel / "round3", decide_leximin)):
        doc = json.loads((folder / "decision.json").read_text())
        assert doc["complete"]
        again = rule([json.loads((folder / f).read_text()) for f in doc["folds"]],
                     score_speeds(repo / doc["speeds_from"]), doc.get("round", 1))
        assert again["winner"] == doc["winner"] and again["within_tie"] == doc["within_tie"]
    assert doc["round"] == 3 and doc["round2_candidates_winner"] == "ours/feature-knn+pixel-guard@max"   # reproduced
    # round 6: the winner (recipe and score) derived again from its folds and control, and shipped as the default
    doc = json.loads((sel / "round6" / "decision.json").read_text())
    recs = [json.loads((sel / "round6" / f).read_text()) for f in doc["folds"]]
    from oodgen.selection import CONTROL_RECIPE, decide_round6
    again = decide_round6([r for r in recs if r["recipe"] != CONTROL_RECIPE],
                          [r for r in recs if r["recipe"] == CONTROL_RECIPE], score_speeds(repo / doc["speeds_from"]))
    assert doc["complete"] and again["winner"] == doc["winner"] and again["noise_check"] == doc["noise_check"]
    assert doc["round"] == 6 and doc["score"] == RECOMMENDED and RECOMMENDED in SCORES and doc["noise_check"]["passed"]
    assert doc["recipe"] == "ours+cosine" and Variant().head == "cosine"
    assert doc["round5_candidates_winner"] == "ours/feature-knn+class-pixel-guard@max"      # rounds 3-5 reproduced


def test_old_runs_read_feature_knn_from_their_components():
    from oodgen.summary import results_by_score
    comp = {"mnist": {"auroc": 97.0}}
    m = {"ood_by_score": {"ood-class": {"mnist": {"auroc": 60.0}}}, "fisher_components": {"feature-knn": comp, "nll": {}}}
    assert results_by_score(m) == {"ood-class": {"mnist": {"auroc": 60.0}}, "feature-knn": comp}
    newer = {"ood_by_score": {"feature-knn": {"mnist": {"auroc": 98.0}}}, "fisher_components": {"feature-knn": comp}}
    assert results_by_score(newer)["feature-knn"] == {"mnist": {"auroc": 98.0}}
    assert results_by_score({}) == {}


def test_compare_shows_recommended_and_paper(tmp_path):
    from oodgen.compare import compare_table
    by_score = {r: {"fmnist": {"auroc": 90.0 + i}} for i, r in enumerate(SCORES)}
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"id": "mnist", "score": "ood-class", "variant": {},
                                                "ood": by_score["ood-class"], "ood_by_score": by_score}))
    row = next(line for line in compare_table([d]).splitlines() if line.startswith("| fmnist"))
    # one column when the recommended score is the paper's own
    expected = [f"{by_score[r]['fmnist']['auroc']:.1f}" for r in dict.fromkeys((RECOMMENDED, "ood-class"))]
    assert [c.strip() for c in row.split("|")[2:-1]] == expected


@pytest.mark.parametrize("primary", ["reject+fisher", "ood-class"])
def test_run_summary_prints_the_paper_score_beside_the_primary(primary):
    from oodgen.summary import markdown_table
    by_score = {r: {"fmnist": {k: 90.0 + i for k in ("fpr95", "detection_error", "auroc", "aupr_in", "aupr_out")}}
                for i, r in enumerate(SCORES)}
    metrics = {"method": "oodgen", "id": "mnist", "profile": "smoke", "seed": 0, "score": primary,
               "score_paper": "ood-class", "accuracy": 99.0, "ood": by_score[primary], "ood_by_score": by_score}
    lines = markdown_table(metrics).splitlines()
    head = next(line for line in lines if line.startswith("| OOD set | FPR95"))
    row = next(line for line in lines if line.startswith("| fmnist | "))
    if primary == "ood-class":              # nothing to put beside the paper's own score
        assert head.endswith("| AUROC ↑ | AUPR-in ↑ | AUPR-out ↑ |") and len(row.split("|")) == 8
    else:
        assert head.endswith("| AUROC p(n+1) (paper) |")
        assert row.split("|")[-2].strip() == f"{by_score['ood-class']['fmnist']['auroc']:.1f}"
        assert row.split("|")[4].strip() == f"{by_score[primary]['fmnist']['auroc']:.1f}"
    rules_head = next(line for line in lines if line.startswith("| OOD set | ") and "FPR95" not in line)
    assert rules_head.split("|")[2].strip().startswith(primary if primary != "ood-class" else "p(n+1)")
