"""Every research experiment imports (against today's library), runs nothing on import, answers
``--help``, and touches no ``sys.path``; experiments/README.md lists each one."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if p.stem != "__init__")


def test_the_experiments_are_found():
    assert len(EXPERIMENTS) >= 10 and "choose_banks" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_imports_and_answers_help(name, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)                 # anything written on import would land here
    module = importlib.import_module(f"experiments.{name}")
    assert callable(module.main) and module.__doc__
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sys, "argv", [f"experiments.{name}", "--help"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["experiments", "scripts"])
def test_no_sys_path_edits(folder):
    hits = [f"{p.name}:{i}" for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".sh", ".md"}
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if "sys.path" in line]
    assert hits == []


def test_experiments_import_only_oodgen():
    """Research code uses the library like any user: no import of another experiment or of a test."""
    for name in EXPERIMENTS:
        text = (REPO / "experiments" / f"{name}.py").read_text()
        for mod in re.findall(r"^\s*(?:from|import) ([\w.]+)", text, re.M):
            assert mod.split(".")[0] not in {"experiments", "tests", "scripts"}, (name, mod)


def test_the_index_lists_every_experiment():
    index = (REPO / "experiments" / "README.md").read_text()
    assert [n for n in EXPERIMENTS if f"]({n}.py)" not in index] == []


def test_health_table_matches_the_committed_one():
    """summarize_health rebuilds results/cvae_health/README.md from the committed measurements."""
    from experiments.summarize_health import health_readme
    committed = (REPO / "results" / "cvae_health" / "README.md").read_text()
    assert health_readme(REPO / "results") == committed


def test_regen_check_applies_the_declared_criterion():
    """experiments.regen_check: a cell passes within the old seeds' range (or the floor), fails beyond it;
    accuracy beyond 0.3 points fails."""
    from experiments.regen_check import check

    def m(acc, auroc):
        ood = {"mnist": {"auroc": auroc}}
        return {"accuracy": acc, "ood": ood, "ood_by_score": {"ood-class": ood}, "score": "ood-class",
                "timings_s": {"total": 1.0}, "environment": {"cpu": "x"}}

    old = [m(91.0, 60.0), m(91.2, 70.0), m(91.1, 65.0)]            # range 10
    assert check([m(91.1, 72.0)] * 3, old)["passed"]               # +7 <= 10
    res = check([m(91.1, 76.0)] * 3, old)
    assert not res["passed"] and res["failed"] == ["ood-class / mnist: +11.00 (allowed 10.00)"]
    flat = [m(91.0, 99.9)] * 3                                      # range 0: the floor applies
    assert check([m(91.0, 99.85)] * 3, flat)["passed"] and not check([m(91.0, 99.7)] * 3, flat)["passed"]
    assert not check([m(91.5, 65.0)] * 3, old)["passed"]           # accuracy +0.4


def test_reevaluate_scores_a_finished_run_again_and_refuses_one_without_checkpoints(tmp_path):
    """experiments.reevaluate: the same numbers for every rule, nothing trained, the re-scoring recorded; a folder
    without its checkpoints is refused before anything runs (it would train from scratch)."""
    import json
    from experiments.reevaluate import reevaluate
    from oodgen.config import RunConfig
    from oodgen.run import run
    first = run(RunConfig(id="mnist", profile="smoke", seed=1), tmp_path / "r", progress=False, log=lambda *_: None)
    again = reevaluate(tmp_path / "r", log=lambda *_: None)
    assert again["reevaluated"] and not first["reevaluated"]
    assert again["ood_by_score"] == first["ood_by_score"] and again["timings_s"] == first["timings_s"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["reevaluated"]
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((tmp_path / "r" / "config.json").read_text())
    with pytest.raises(SystemExit, match="checkpoints"):
        reevaluate(tmp_path / "bare")
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["config.json"]
    # a stage stopped before its last epoch would train on: refused too, and nothing is written
    import shutil
    import torch
    from oodgen.utils import atomic_torch_save
    shutil.copytree(tmp_path / "r", tmp_path / "short")
    blob = torch.load(tmp_path / "short" / "checkpoints" / "nplus1.pt", weights_only=True)
    atomic_torch_save({**blob, "epoch": 0}, tmp_path / "short" / "checkpoints" / "nplus1.pt")
    before = (tmp_path / "short" / "metrics.json").read_bytes()
    with pytest.raises(SystemExit, match="nplus1.pt \\(epoch 0 of 1\\)"):
        reevaluate(tmp_path / "short")
    assert (tmp_path / "short" / "metrics.json").read_bytes() == before
