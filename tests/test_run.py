"""Integration: `oodgen run` with the smoke profile on a small MNIST subset."""
import json
import math

import pytest
import torch

from oodgen.cli import main
from oodgen.config import PROFILES, RECOMMENDED, RunConfig, Variant
from oodgen.metrics import METRIC_NAMES
from oodgen.run import RunError, run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["run", "--id", "mnist", "--profile", "smoke", "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    return out


def test_metrics_schema(smoke_run):
    m = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("id", "method", "seed", "profile", "variant", "accuracy", "accuracy_plain", "ood", "score",
                "config", "environment", "timings_s"):
        assert key in m, key
    assert m["id"] == "mnist" and m["method"] == "oodgen" and m["seed"] == 0 and m["profile"] == "smoke"
    assert m["variant"] == {"encoder_act": "leaky-all", "kl_warmup": 1.0, "sample_z": True, "beta": "paper", "nullspace": "uniform", "type2_radius": "surface",
                            "score": "recommended", "sphere_radius": "paper", "clip_type1": "clip", "cvae_retries": 2,
                            "colour_sigma": 0.0, "cvae_lr_warmup": 0, "extra_outliers": "none", "head": "cosine"}
    assert set(m["ood"]) >= {"fmnist", "notmnist", "omniglot", "kmnist", "gaussian", "uniform", "sphere"}
    for name, row in m["ood"].items():
        assert set(row) == set(METRIC_NAMES)
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in row.values()), name
    assert m["environment"]["torch"].startswith("2.")
    assert 0 <= m["accuracy"] <= 100
    h = m["cvae_health"]
    assert h["latent_dim"] == 8 and len(h["latent_var"]) == 8 and len(h["type2_radius"]) == 10
    assert isinstance(h["collapsed"], bool) and h["class_mean_nats"] > 0
    panel = m["generated_panel"]
    assert set(panel["auroc"]["ood-class"]) == {"type1-paper", "type1-authors", "type1-wide-half",
                                                "type2-surface", "type2-shell"}
    assert 0 <= panel["mean_auroc"]["ood-class"] <= 100
    # the recommended score is the primary one, the paper's p(n+1) printed beside it (test_selection.py)
    assert m["score"] == RECOMMENDED and m["score_option"] == "recommended" and m["score_paper"] == "ood-class"
    assert m["ood"] == m["ood_by_score"][RECOMMENDED]
    table = (smoke_run / "results.md").read_text()
    assert "CVAE health:" in table and "p(n+1) (paper)" in table and "encoder leaky" in table


def test_auroc_floor_on_uniform_noise(smoke_run):
    m = json.loads((smoke_run / "metrics.json").read_text())
    # Even a 1-epoch model on 550 images must tell uniform noise from digits.
    assert m["ood"]["uniform"]["auroc"] >= 90
    assert (smoke_run / "results.md").read_text().count("|") > 20
    assert (smoke_run / "detector.pt").exists()


def test_rerun_with_other_config_is_refused(smoke_run):
    with pytest.raises(RunError, match="different configuration"):
        run(RunConfig(id="mnist", profile="smoke", variant=Variant(beta="authors")), smoke_run, progress=False)


def test_config_check_tolerates_older_files_but_not_real_changes(tmp_path):
    """A config.json from an older version (a variant option added since, another evaluation batch)
    still resumes; a change of what the run trains does not."""
    from oodgen.run import _check_config
    cfg = RunConfig(id="mnist", profile="full", seed=0)
    old = cfg.to_dict()
    del old["variant"]["clip_type1"]                      # absent before the option existed: its default
    old["profile_settings"]["eval_batch"] = 1000          # evaluation-only
    (tmp_path / "config.json").write_text(json.dumps(old))
    _check_config(tmp_path, cfg)                          # no error
    for changed in (RunConfig(id="mnist", profile="full", seed=1),
                    RunConfig(id="mnist", profile="full", seed=0, variant=Variant(clip_type1="half"))):
        with pytest.raises(RunError, match="different configuration"):
            _check_config(tmp_path, changed)
    old["profile_settings"]["cvae"]["epochs"] = 3         # a training setting
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(RunError, match=r"differs in \['profile_settings'\]"):
        _check_config(tmp_path, cfg)


def test_rerun_resumes_without_training(smoke_run, capsys):
    before = json.loads((smoke_run / "metrics.json").read_text())
    after = run(RunConfig(id="mnist", profile="smoke", device="cpu"), smoke_run, progress=False)
    out = capsys.readouterr().out
    assert "] epoch 1/1" not in out and "[cvae] resuming after epoch 1/1" in out
    assert after["ood"] == before["ood"] and after["accuracy"] == before["accuracy"]


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["run", "--id", "mnist", "--profile", "smoke", "--out", str(tmp_path), "--beta", "huge",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_profiles_and_score_rule():
    assert set(PROFILES) == {"smoke", "quick", "full", "paper"}
    assert RunConfig(id="mnist").score_rule == RECOMMENDED == RunConfig(id="mnist0-4").score_rule
    assert RunConfig(id="mnist0-4").paper_rule == "max-in"
    assert RunConfig(id="mnist", variant=Variant(score="paper")).score_rule == "ood-class"
    assert RunConfig(id="mnist0-4", variant=Variant(score="paper")).score_rule == "max-in"
    assert RunConfig(id="fmnist0-4", variant=Variant(score="paper")).score_rule == "ood-class"
    assert RunConfig(id="mnist", variant=Variant(score="max-in")).score_rule == "max-in"
    assert RunConfig(id="fmnist").latent == 10 and RunConfig(id="mnist0-4").latent == 8
    paper_f = RunConfig(id="fmnist", profile="paper").prof
    assert paper_f.classifier.optimizer == "adadelta" and paper_f.classifier.lr == 0.1
    assert RunConfig(id="mnist", profile="paper").prof.classifier.lr == 0.01
    cfg = RunConfig(id="fmnist0-4", seed=3, variant=Variant(beta="0.5,2"))
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.variant.beta_range() == (0.5, 2.0)
    assert RunConfig(id="fmnist", profile="quick", w_ood=0.5).prof.w_ood == 0.5
    assert RunConfig(id="fmnist", profile="quick").prof.w_ood == 0.1


def test_rerun_of_finished_run_reevaluates_and_keeps_training_cost(tmp_path):
    from oodgen.config import RunConfig
    from oodgen.run import run
    cfg = RunConfig(id="mnist", profile="smoke")
    first = run(cfg, tmp_path, progress=False, log=lambda *_a: None)
    assert first["reevaluated"] is None
    panel = tmp_path / "checkpoints" / "panel.pt"
    assert panel.is_file()                         # the generated panel is kept for re-evaluations
    made = panel.stat().st_mtime_ns
    second = run(cfg, tmp_path, progress=False, log=lambda *_a: None)
    assert second["reevaluated"] is not None and second["reevaluated"]["evaluation_s"] > 0
    assert second["timings_s"] == first["timings_s"]
    assert second["ood"] == first["ood"]          # same weights, same data: same numbers
    assert panel.stat().st_mtime_ns == made        # read back, not generated again
    assert second["generated_panel"] == first["generated_panel"]
    panel.write_bytes(b"not a torch file")         # a damaged cache is generated again, same numbers
    third = run(cfg, tmp_path, progress=False, log=lambda *_a: None)
    assert third["generated_panel"] == first["generated_panel"]
    assert torch.load(panel, weights_only=True)["key"]


def test_python_dash_m_runs_the_cli(tmp_path):
    """``python -m oodgen`` is the ``oodgen`` command (used where no console script is installed)."""
    import subprocess
    import sys
    ok = subprocess.run([sys.executable, "-m", "oodgen", "run", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--profile" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "oodgen", "run", "--id", "mnist", "--profile", "smoke",
                          "--out", str(tmp_path), "--beta", "huge", "--no-progress"], capture_output=True, text=True)
    assert bad.returncode != 0 and "beta" in bad.stderr


def test_strict_stops_on_a_collapsed_cvae(tmp_path, capsys):
    """The smoke profile's CVAE (9 steps) cannot model MNIST: --strict stops before the classifier."""
    rc = main(["run", "--id", "mnist", "--profile", "smoke", "--out", str(tmp_path), "--no-progress", "--strict"])
    out, err = capsys.readouterr()
    assert rc == 2 and "collapsed" in err and "latent dimensions" in err
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "checkpoints" / "nplus1.pt").exists()
    # it was trained again from a fresh initialisation twice (the default --cvae-retries 2) first
    assert "CVAE attempt 1 collapsed" in out and "attempt 3 of 3" in out
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("cvae*.pt"))
    assert ckpts == ["cvae-retry1.pt", "cvae-retry2.pt", "cvae.pt"]


def test_collapsed_cvae_attempts_are_recorded(tmp_path):
    """Every CVAE attempt is in cvae_health["attempts"] with its seed; --cvae-retries 0 is one attempt."""
    from oodgen.detectors.oodgen import cvae_attempt_seed
    one = run(RunConfig(id="mnist", profile="smoke", variant=Variant(cvae_retries=0)), tmp_path / "one",
              progress=False, log=lambda *_a: None)
    assert [a["attempt"] for a in one["cvae_health"]["attempts"]] == [0]
    two = run(RunConfig(id="mnist", profile="smoke", variant=Variant(cvae_retries=1)), tmp_path / "two",
              progress=False, log=lambda *_a: None)
    attempts = two["cvae_health"]["attempts"]
    assert [(a["attempt"], a["seed"]) for a in attempts] == [(0, 0), (1, cvae_attempt_seed(0, 1))]
    assert attempts[0]["collapsed"]                       # 9 smoke steps cannot model MNIST
    assert attempts[0] == one["cvae_health"]["attempts"][0]   # the first attempt is the one-attempt run's
    assert (tmp_path / "two" / "checkpoints" / "cvae-retry1.pt").exists()


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("victim", ["checkpoints/cvae.pt", "checkpoints/nplus1.pt", "checkpoints/plain.pt",
                                    "detector.pt"])
def test_crafted_files_are_refused_unread(smoke_run, tmp_path, victim):
    """People share run directories: a pickle in any file oodgen reads must never run, and the
    command must stop with a one-line error naming the file."""
    import shutil

    from oodgen.score import DetectorFileError, load_detector
    run_dir = tmp_path / "shared"
    shutil.copytree(smoke_run, run_dir)
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker), "epoch": 1}, run_dir / victim)
    if victim == "detector.pt":
        with pytest.raises(DetectorFileError, match="detector.pt"):
            load_detector(run_dir)
        assert main(["score", str(run_dir), str(run_dir / "metrics.json")]) == 2
    else:
        (run_dir / "metrics.json").unlink()     # make `oodgen run` resume from the checkpoints
        assert main(["run", "--id", "mnist", "--profile", "smoke", "--seed", "0", "--out", str(run_dir),
                     "--no-progress"]) == 2
    assert not marker.exists()


def test_payload_would_run_if_unpickled(tmp_path):
    """The control for the test above: the crafted file does run code under a plain unpickle."""
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(marker)}, tmp_path / "x.pt")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()


def test_regen_every_option(monkeypatch):
    """--regen-every: the profile's every epoch by default, an integer, or the authors' interval per setting;
    bad values fail when the configuration is read (before any data), and the pools really are rebuilt only
    every K epochs (resumed runs rebuild the pool of the epoch it was last made at)."""
    from dataclasses import replace
    from oodgen import train as T
    from oodgen.models import Fig6cCNN
    assert RunConfig(id="mnist").prof.regen_every == 1
    assert RunConfig(id="fmnist", regen_every="authors").prof.regen_every == 10
    assert RunConfig(id="mnist0-4", regen_every="authors").prof.regen_every == 5
    assert RunConfig(id="mnist", regen_every=3).prof.regen_every == 3
    for bad in (0, -2, "x", "2.5", True):
        with pytest.raises(ValueError, match="regen_every"):
            RunConfig(id="mnist", regen_every=bad).prof
    cfg = RunConfig(id="mnist", regen_every="authors")
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    made = []

    class Pools:
        type1 = type2 = None

        def regenerate(self, gen, progress=False):
            made.append(gen.initial_seed())
            self.type1 = self.type2 = torch.zeros(4, 1, 28, 28)

    prof = replace(PROFILES["smoke"], regen_every=2, classifier=replace(PROFILES["smoke"].classifier, epochs=5))
    model = Fig6cCNN(3)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 2
    T.train_nplus1(model, x, y, Pools(), prof, None, 0, progress=False, log=lambda *_: None)
    assert len(made) == 3 and len(set(made)) == 3          # epochs 0, 2 and 4


def test_hparams_option_paper_and_authors():
    """--hparams: the paper profile's n+1 learning rate and OOD weight per setting, the text's or the
    authors' from-scratch runs' (with their regeneration interval); --w-ood / --regen-every still win;
    only with the paper profile and a paper setting; a run directory written before it resumes."""
    from oodgen.run import _comparable
    assert RunConfig(id="mnist", profile="paper").prof.classifier.lr == 0.01
    assert RunConfig(id="fmnist", profile="paper").prof.classifier.lr == 0.1
    a = RunConfig(id="mnist", profile="paper", hparams="authors").prof
    assert (a.classifier.lr, a.w_ood, a.regen_every, a.plain.lr) == (0.05, 0.1, 5, 0.01)
    a = RunConfig(id="fmnist", profile="paper", hparams="authors").prof
    assert (a.classifier.lr, a.w_ood, a.regen_every) == (0.1, 0.1, 10)
    assert RunConfig(id="mnist0-4", profile="paper", hparams="authors").prof.classifier.lr == 0.02
    a = RunConfig(id="fmnist0-4", profile="paper", hparams="authors", w_ood=0.3, regen_every=2).prof
    assert (a.w_ood, a.regen_every) == (0.3, 2)
    assert PROFILES["paper"].monitor and not PROFILES["full"].monitor
    for kw in ({"profile": "full"}, {"profile": "paper", "train": "x.npz"}):
        with pytest.raises(ValueError, match="hparams 'authors' needs"):
            RunConfig(id="mnist", hparams="authors", **kw)
    with pytest.raises(ValueError, match="hparams must be"):
        RunConfig(id="mnist", profile="paper", hparams="keras")
    cfg = RunConfig(id="fmnist", profile="paper", hparams="authors")
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = RunConfig(id="mnist").to_dict()
    del old["hparams"]
    assert _comparable(old) == _comparable(RunConfig(id="mnist").to_dict())
    assert _comparable(cfg.to_dict()) != _comparable(RunConfig(id="fmnist", profile="paper").to_dict())
