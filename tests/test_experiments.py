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
