"""``oodgen bench`` end to end on the smoke profile, and the transcribed paper tables."""
import argparse
import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

from oodgen.detectors.base import BenchInfo
from oodgen.detectors.max_logit import MaxLogit
from oodgen.detectors.registry import DETECTORS
from oodgen import bench
from oodgen.data import SETTINGS
from oodgen.metrics import METRIC_NAMES
from oodgen.config import RECOMMENDED, resolve_score
from oodgen.bench import BenchOptions
from oodgen.bench.methods import Context
from oodgen.bench.tables import DERIVED, OURS, paper_tables


def _options(out, **kwargs) -> BenchOptions:
    return BenchOptions(profile="smoke", out=out, log=lambda *_: None, **kwargs)


def test_paper_tables_transcription():
    paper = paper_tables()
    t1, t2 = paper["table1"], paper["table2"]
    assert paper["metric_block_order"] == ["fpr95", "detection_error", "auroc", "aupr_out", "aupr_in"]
    assert t1["results"]["mnist"]["fmnist"]["auroc"]["oodgen"] == 100.0
    assert t1["results"]["fmnist"]["mnist"]["auroc"]["oodgen"] == 98.7
    assert t1["results"]["fmnist"]["mnist"]["fpr95"]["oodgen"] == 4.1          # authors' log: 4.1 %
    assert t1["results"]["mnist0-4"]["mnist5-9"]["auroc"]["oodgen"] == 93.8
    assert t2["results"]["fmnist"]["mnist"]["auroc"]["msp"] == 70.6            # authors' log: 0.704
    assert t1["accuracy"]["fmnist"] == {"plain": 91.9, "oodgen": 91.2}
    for table in (t1, t2):
        for setting, sets in table["results"].items():
            assert setting in SETTINGS
            # every paper OOD set is one of ours (KMNIST is our extra set)
            assert set(sets) <= set(SETTINGS[setting]) - {"kmnist"}
            for cells in sets.values():
                assert set(cells) == set(METRIC_NAMES)
                for cell in cells.values():
                    vals = [cell[m] for m in table["methods"]]
                    assert all(0.0 <= v <= 100.0 for v in vals)


def test_parser_defaults():
    ap = argparse.ArgumentParser()
    bench.add_parser(ap.add_subparsers(dest="command"))
    a = ap.parse_args(["bench", "--id", "all", "--out", "x"])
    assert a.seeds == [0, 1, 2] and "oodgen" in a.methods and "odin-fair" not in a.methods
    assert callable(a.func)
    # the flags become one BenchOptions, built once and passed to every job
    assert bench.options_from_args(a) == BenchOptions(profile="quick", out="x", progress=True)
    ray = bench.options_from_args(ap.parse_args(["bench", "--id", "mnist", "--out", "x", "--executor", "ray",
                                                 "--cpus-per-job", "2", "--no-progress", "--retrain-plain"]))
    assert (ray.executor, ray.cpus_per_job, ray.progress, ray.retrain_plain) == ("ray", 2.0, False, True)
    with pytest.raises(ValueError, match="unknown profile"):
        BenchOptions(profile="huge", out="x")
    with pytest.raises(SystemExit):
        ap.parse_args(["bench", "--id", "cifar", "--out", "x"])


class _Throwaway(MaxLogit):
    """A detector registered only by this test: the bench must run and table it with no other edit."""

    bench_info = BenchInfo("Throwaway", "extra", "outputs", "-2 x max logit")

    def _score_outputs(self, logits):
        return 2.0 * super()._score_outputs(logits)


def test_bench_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(DETECTORS, "throwaway", _Throwaway)
    methods = ["oodgen", "msp", "energy", "mahalanobis", "throwaway"]
    tables = bench.bench(["mnist"], methods, [0], _options(tmp_path))
    thr = json.loads((tmp_path / "mnist" / "throwaway" / "seed0" / "metrics.json").read_text())
    assert thr["score"] == "-2 x max logit" and thr["accuracy"] is not None
    assert "Throwaway" in (tmp_path / "tables" / "extra.md").read_text()
    cell = tables["extra"]["settings"]["mnist"]["rows"]["fmnist"]["auroc"]["throwaway"]
    assert cell["n"] == 1 and cell["mean"] == thr["ood"]["fmnist"]["auroc"]
    methods.remove("throwaway")
    run_dir = tmp_path / "mnist" / "oodgen" / "seed0"
    assert (run_dir / "checkpoints" / "plain.pt").exists() and (run_dir / "plain_outputs.npz").exists()
    for m in methods:
        metrics = json.loads((tmp_path / "mnist" / m / "seed0" / "metrics.json").read_text())
        assert metrics["id"] == "mnist" and metrics["method"] == m and metrics["seed"] == 0
        assert metrics["profile"] == "smoke" and "environment" in metrics and "config" in metrics
        assert set(metrics["ood"]) >= {"fmnist", "notmnist", "uniform", "sphere"}
        for cell in metrics["ood"].values():
            assert set(cell) == set(METRIC_NAMES)
    md = json.loads((tmp_path / "mnist" / "mahalanobis" / "seed0" / "metrics.json").read_text())
    assert md["tuning"]["mode"] == "test-ood" and set(md["tuning"]["chosen"]) == set(md["ood"])
    assert all(n == 150 for n in md["n_ood"].values())           # 300 smoke images, half held out

    for name in ("table1", "table2", "extra"):
        for ext in ("md", "csv", "json"):
            assert (tmp_path / "tables" / f"{name}.{ext}").exists()
    t1 = json.loads((tmp_path / "tables" / "table1.json").read_text())
    assert t1 == json.loads(json.dumps(tables["table1"]))
    rows = t1["settings"]["mnist"]["rows"]
    ours = rows["fmnist"]["auroc"]["oodgen"]
    assert ours["n"] == 1 and ours["std"] is None and ours["paper"] == 100.0 and 0 <= ours["mean"] <= 100
    assert rows["fmnist"]["auroc"]["oodgen-paper"]["paper"] == 100.0       # the paper's value beside p(n+1) too
    assert rows["fmnist"]["auroc"]["confident"] == {"mean": None, "std": None, "n": 0, "seeds": [], "paper": 98.5}
    # no paper value for KMNIST; every row of ours is the same run scored by one rule: "Ours" by the
    # recommended one, "oodgen-paper" by p(n+1), the others by the remaining rules
    assert rows["kmnist"]["auroc"].keys() == set(OURS) | {"mahalanobis"}
    assert OURS.keys() == DERIVED.keys() and DERIVED["oodgen"] == ("oodgen", "recommended")
    run0 = json.loads((tmp_path / "mnist" / "oodgen" / "seed0" / "metrics.json").read_text())
    for m, (_source, rule) in DERIVED.items():
        assert rows["kmnist"]["auroc"][m]["mean"] == run0["ood_by_score"][resolve_score(rule, "mnist")]["kmnist"]["auroc"]
    assert rows["kmnist"]["auroc"]["oodgen"]["mean"] == run0["ood_by_score"][RECOMMENDED]["kmnist"]["auroc"]
    assert rows["kmnist"]["auroc"]["oodgen-paper"]["mean"] == run0["ood_by_score"]["ood-class"]["kmnist"]["auroc"]
    dev = json.loads((tmp_path / "tables" / "deviations.json").read_text())
    assert all(abs(c["ours"] - c["paper"]) > 5 for c in dev["cells"])
    expected = sum(1 for m, c in rows["fmnist"]["auroc"].items()
                   if c["mean"] is not None and c["paper"] is not None and abs(c["mean"] - c["paper"]) > 5)
    assert expected == sum(1 for c in dev["cells"] if c["table"] == "table1" and c["setting"] == "mnist"
                           and c["ood"] == "fmnist")
    summary = json.loads((tmp_path / "tables" / "summary.json").read_text())["settings"]["mnist"]
    assert set(OURS) | {"mahalanobis", "msp"} <= set(summary)
    assert summary["msp"]["mean_auroc"] == pytest.approx(
        np.mean([c["auroc"] for c in json.loads((tmp_path / "mnist" / "msp" / "seed0" / "metrics.json").read_text())["ood"].values()]))
    with open(tmp_path / "tables" / "table1.csv") as fh:
        lines = list(csv.DictReader(fh))
    # 5 metrics x: 6 run paper sets x (our rows + 3 paper baselines), EMNIST-letters (paper values only) x
    # (4 paper methods + the paper's value beside our p(n+1) row), KMNIST (no paper value) x the columns that ran
    assert len(lines) == 5 * (6 * (len(OURS) + 3) + 5 + len(OURS) + 1)
    with open(tmp_path / "tables" / "table2.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 7 * 5 * 3 + 5 * 1

    # Resume: finished runs are skipped, nothing is rewritten.
    stamp = (tmp_path / "mnist" / "msp" / "seed0" / "metrics.json").stat().st_mtime_ns
    bench.bench(["mnist"], ["msp"], [0], _options(tmp_path))
    assert (tmp_path / "mnist" / "msp" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    report = bench.bench_serial(["mnist"], ["msp", "energy"], [0], _options(tmp_path))
    assert report.ran == [] and report.skipped == ["mnist/oodgen/seed0", "mnist/msp/seed0", "mnist/energy/seed0"]
    # The tables cover every seed in OUT, not only the seeds of this call
    other = json.loads((tmp_path / "mnist" / "msp" / "seed0" / "metrics.json").read_text())
    other["seed"] = 5
    (tmp_path / "mnist" / "msp" / "seed5").mkdir()
    (tmp_path / "mnist" / "msp" / "seed5" / "metrics.json").write_text(json.dumps(other))
    again = bench.bench(["mnist"], ["msp"], [0], _options(tmp_path))
    assert again["table2"]["settings"]["mnist"]["rows"]["fmnist"]["auroc"]["msp"]["n"] == 2


def test_bench_refuses_a_run_of_another_profile(tmp_path):
    run_dir = tmp_path / "mnist" / "oodgen" / "seed0"
    run_dir.mkdir(parents=True)
    from oodgen.config import RunConfig
    (run_dir / "config.json").write_text(json.dumps(RunConfig(id="mnist", profile="quick").to_dict()))
    with pytest.raises(bench.BenchError, match="profile=quick"):
        bench.bench(["mnist"], ["msp"], [0], _options(tmp_path))


def test_context_loads_the_plain_classifier_only_when_needed(tmp_path):
    """The confident classifier trains its own model: a run whose plain.pt is gone (checkpoints
    are not in git) can still be benchmarked with it; the post-hoc methods then fail clearly."""
    from oodgen.config import RunConfig
    from oodgen.run import run
    cfg = RunConfig(id="mnist", seed=0, profile="smoke")
    run_dir = tmp_path / "mnist" / "oodgen" / "seed0"
    run(cfg, run_dir, progress=False, log=lambda *_: None)
    # The fair tuning outliers use the run's own variant; the default "clip" used to be passed
    # as a string that off_manifold_samples refused.
    ctx = Context(cfg, run_dir, None, 2, lambda *_: None)
    x_in, x_out = ctx.fair_outliers()
    assert len(x_in) == len(x_out) and float(x_out.min()) >= 0.0 and float(x_out.max()) <= 1.0
    (run_dir / "checkpoints" / "plain.pt").unlink()
    ctx = Context(cfg, run_dir, None, 2, lambda *_: None)   # no error yet
    with pytest.raises(bench.BenchError, match="plain.pt is missing"):
        ctx.outputs()
    bench.bench(["mnist"], ["confident"], [0], _options(tmp_path))
    metrics = json.loads((tmp_path / "mnist" / "confident" / "seed0" / "metrics.json").read_text())
    assert metrics["method"] == "confident" and set(metrics["ood"]) >= {"fmnist", "uniform"}
    with pytest.raises(bench.BenchError, match="plain.pt is missing"):
        bench.bench(["mnist"], ["msp"], [0], _options(tmp_path))


def test_bench_uses_its_own_device_not_the_stored_runs(tmp_path):
    """A run trained with --device cuda can be benchmarked on a CPU-only machine."""
    from oodgen.bench.jobs import run_dir_config
    from oodgen.config import RunConfig
    cfg = RunConfig(id="mnist", seed=1, profile="smoke", device="cuda")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    got = run_dir_config(tmp_path, "mnist", 1, "smoke", "auto")
    assert got.device == "auto" and got.to_dict()["variant"] == cfg.to_dict()["variant"]


def test_retrain_plain_rebuilds_a_lost_plain_classifier(tmp_path):
    """A finished run whose plain.pt is gone: without --retrain-plain the bench stops and says how to
    go on; with it, the plain classifier is trained alone and is the run's own network (same seed,
    recipe and split), so the baseline's numbers are the same as before the loss."""
    import torch
    from oodgen.train import load_checkpoint

    bench.bench(["mnist"], ["oodgen", "msp"], [0], _options(tmp_path))
    ckpt = tmp_path / "mnist" / "oodgen" / "seed0" / "checkpoints"
    before = load_checkpoint(ckpt / "plain.pt")["model"]
    msp_path = tmp_path / "mnist" / "msp" / "seed0" / "metrics.json"
    msp_before = json.loads(msp_path.read_text())
    (ckpt / "plain.pt").unlink()
    (ckpt.parent / "plain_outputs.npz").unlink()
    msp_path.unlink()
    with pytest.raises(bench.BenchError, match="--retrain-plain"):
        bench.bench(["mnist"], ["msp"], [0], _options(tmp_path))
    bench.bench(["mnist"], ["msp"], [0], _options(tmp_path, retrain_plain=True))
    assert not (ckpt / "plain.retraining.pt").exists()      # trained aside, then moved into place
    after = load_checkpoint(ckpt / "plain.pt")["model"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    msp_after = json.loads(msp_path.read_text())
    assert "--retrain-plain" in msp_after["classifier"]
    assert msp_after["ood"] == msp_before["ood"] and msp_after["accuracy"] == msp_before["accuracy"]


def test_budget_table_groups_runs_by_recipe_budget_and_score(tmp_path):
    """tables/budget.*: each oodgen run of MNIST / F-MNIST placed by its recipe (read from the variant),
    profile and seed; both scores per OOD set, mean and std over seeds; the bench's own folder wins over
    a copy of the same run elsewhere; the paper's cell and the authors' logged range beside them."""
    from oodgen.bench.budget import RECIPES, budget_markdown, recipe_of, write_budget_table
    from oodgen.bench.tables import paper_tables
    from oodgen.config import RECOMMENDED, Variant

    def write(path, seed, profile, variant, auroc_rec, auroc_paper, hparams="paper", setting="fmnist", regen=1):
        ood = {"mnist": {"auroc": auroc_rec}}
        m = {"method": "oodgen", "id": setting, "seed": seed, "profile": profile, "variant": variant,
             "accuracy": 90.0 + seed, "ood": ood, "config": {"hparams": hparams, "profile_settings": {"regen_every": regen}},
             "ood_by_score": {**({RECOMMENDED: ood} if auroc_rec is not None else {}),
                              "ood-class": {"mnist": {"auroc": auroc_paper}}},
             "cvae_health": {"active_dims": 9, "latent_dim": 10, "recon_ratio": 0.7, "collapsed": False}}
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "metrics.json").write_text(json.dumps(m))

    ours = {**asdict(Variant()), **RECIPES["ours"]}
    authors = {**asdict(Variant()), **RECIPES["authors"]}
    assert recipe_of(ours) == "ours" and recipe_of(authors) == "authors" and recipe_of({"beta": "x"}) is None
    assert recipe_of({**ours, "extra_outliers": "patch-shuffle"}) is None       # no recipe has an extra pool
    assert recipe_of({**ours, "extra_outliers": "none"}) == "ours"
    old = {k: v for k, v in ours.items() if k != "head"}                    # written before --head: linear
    assert recipe_of(old) == "ours" and recipe_of({**ours, "head": "cosine"}) == "ours+cosine"
    write("fmnist/oodgen/seed0", 0, "full", ours, 98.0, 60.0)
    write("fmnist/oodgen/seed1", 1, "full", ours, 96.0, 70.0)
    write("ablation/copy-seed0", 0, "full", ours, 10.0, 10.0)           # the same run elsewhere: not counted twice
    write("paper/fmnist-authors-seed0", 0, "paper", authors, 97.0, 90.0, hparams="authors")
    write("mnist/msp/seed0", 0, "full", ours, 50.0, 50.0)                  # not an oodgen run: ignored
    write("ablation/regen4/fmnist-seed0", 0, "full", ours, 99.0, 61.0, regen=4)   # another pool interval: its own row
    doc = write_budget_table(tmp_path, tmp_path / "tables", paper_tables()["table1"])
    rows = {(r["recipe"], r["budget"]): r for r in doc["settings"]["fmnist"]["rows"]}
    rows = {(r["recipe"], r["budget"], r["regen_every"]): r for r in doc["settings"]["fmnist"]["rows"]}
    assert rows[("ours", "full", 4)]["seeds"] == [0] and rows[("ours", "full", 4)]["accuracy"]["mean"] == 90.0
    rows = {(r["recipe"], r["budget"]): r for r in doc["settings"]["fmnist"]["rows"] if r["regen_every"] == 1}
    assert set(rows) == {("ours", "full"), ("authors", "paper")} and "mnist" not in doc["settings"]
    full = rows[("ours", "full")]
    assert full["seeds"] == [0, 1] and full["auroc"]["recommended"]["mnist"]["mean"] == pytest.approx(97.0)
    assert full["auroc"]["paper"]["mnist"]["mean"] == pytest.approx(65.0)
    assert full["auroc"]["paper"]["mnist"]["std"] == pytest.approx(np.std([60.0, 70.0], ddof=1))
    assert rows[("authors", "paper")]["hparams"] == ["authors"]
    assert doc["settings"]["fmnist"]["paper"]["mnist"] == paper_tables()["table1"]["results"]["fmnist"]["mnist"]["auroc"]["oodgen"]
    md = (tmp_path / "tables" / "budget.md").read_text()
    assert md == budget_markdown(doc) and "| authors | paper | 1 | 0 |" in md and "76.4-98.8" in md
    assert "97.00 ± 1.41 / 65.00 ± 7.07" in md
    # a run written before the recommended rule existed: "–", and "(n = k)" where only some seeds record it
    write("fmnist/oodgen/seed2", 2, "full", ours, None, 80.0)
    write("paper/fmnist-ours-seed0", 0, "paper", ours, None, 50.0)
    md = (tmp_path / "tables" / "budget.md").read_text() if write_budget_table(
        tmp_path, tmp_path / "tables", paper_tables()["table1"]) else ""
    assert "97.00 ± 1.41 (n = 2) / 70.00 ± 10.00" in md and "| ours | paper | 1 | 0 |" in md and "– / 50.00" in md


def test_recommended_checks_mark_each_bar_and_never_pass_without_rows(tmp_path):
    from oodgen.bench.tables import _write_recommended_checks

    def cell(mean, n=3):
        return {"mean": mean, "std": 0.1, "n": n, "paper": None}

    def tables(ours_auroc, ours_fpr):
        rows = {"omniglot": {"auroc": {"knn": cell(99.5)}, "fpr95": {"knn": cell(3.0)}}}
        if ours_auroc is not None:
            rows["omniglot"]["auroc"]["oodgen"] = cell(ours_auroc)
            rows["omniglot"]["fpr95"]["oodgen"] = cell(ours_fpr)
        return {"table1": {"settings": {"mnist": {"rows": rows}}}}

    doc = _write_recommended_checks(tmp_path, tables(99.7, 1.0))
    assert doc["all_met"] and doc["rows"][0]["checks"] == {"beats_best_baseline": True, "auroc_floor": True,
                                                           "fpr95_ceiling": True}
    doc = _write_recommended_checks(tmp_path, tables(99.2, 6.0))
    assert not doc["all_met"] and doc["rows"][0]["checks"] == {"beats_best_baseline": False, "auroc_floor": True,
                                                               "fpr95_ceiling": False}
    doc = _write_recommended_checks(tmp_path, tables(None, None))
    assert doc["rows"] == [] and not doc["all_met"]
    assert "All bars met: no." in (tmp_path / "recommended.md").read_text()
