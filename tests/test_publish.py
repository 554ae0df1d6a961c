"""``oodgen publish``: the committed README/docs blocks and results/summary_oodgen.* are exactly what the
committed runs give, and publishing twice changes nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oodgen import publish as P
from oodgen.cli import main

REPO = Path(__file__).resolve().parents[1]
BLOCKS = {"README.md": "RESULTS-GLANCE", "docs/results.md": "RESULTS-TABLE", "docs/benchmark.md": "BENCH-SUMMARY"}
SUMMARIES = ("results/summary_oodgen.md", "results/summary_oodgen.json")


def _copy_tree(dest: Path, seeds: str = "seed*") -> Path:
    """The files `oodgen publish` reads and writes, copied from the checkout."""
    paths = [*BLOCKS, *SUMMARIES, "results/tables/summary.json",
             *(str(p.relative_to(REPO)) for p in REPO.glob(f"results/*/oodgen/{seeds}/metrics.json"))]
    for rel in paths:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, dest / rel)
    return dest


def test_the_committed_files_are_what_the_committed_results_give():
    """Byte for byte: README.md, docs/results.md, docs/benchmark.md and results/summary_oodgen.*."""
    files = P.published_files(REPO)
    assert {str(p.relative_to(REPO)) for p in files} == {*BLOCKS, *SUMMARIES}
    assert [str(p.relative_to(REPO)) for p in P.publish(REPO, check=True)] == []


def test_publish_rewrites_stale_blocks_and_is_idempotent(tmp_path):
    root = _copy_tree(tmp_path)
    for rel, tag in BLOCKS.items():
        text = (root / rel).read_text()
        (root / rel).write_text(P.replace_block(text, tag, "stale numbers\n"))
    for rel in SUMMARIES:
        (root / rel).unlink()
    changed = P.publish(root)
    assert sorted(str(p.relative_to(root)) for p in changed) == sorted([*BLOCKS, *SUMMARIES])
    for rel in [*BLOCKS, *SUMMARIES]:
        assert (root / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    assert P.publish(root) == []


def test_one_seed_shows_no_spread(tmp_path):
    root = _copy_tree(tmp_path, seeds="seed0")
    P.publish(root)
    summary = json.loads((root / SUMMARIES[1]).read_text())
    assert set(summary) == {"mnist", "fmnist", "mnist0-4", "fmnist0-4"}
    assert all(d["seeds"] == [0] for d in summary.values())
    block = P.results_block(summary)
    assert "±" not in block and block.endswith(P.FOOTNOTE + "\n")
    glance = P.glance_block(summary)
    assert "| MNIST | 1 | " in glance and "± " not in glance


def test_missing_markers_and_missing_results_are_clear_errors(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "docs/results.md").write_text("no markers here\n")
    with pytest.raises(P.PublishError, match="docs/results.md lacks the RESULTS-TABLE markers"):
        P.publish(root)
    with pytest.raises(P.PublishError, match="repository checkout"):
        P.published_files(tmp_path / "elsewhere")


def test_cli_check_fails_on_a_stale_block_and_writes_nothing(tmp_path, capsys):
    root = _copy_tree(tmp_path)
    readme = root / "README.md"
    stale = P.replace_block(readme.read_text(), "RESULTS-GLANCE", "stale\n")
    readme.write_text(stale)
    assert main(["publish", "--root", str(root), "--check"]) == 1
    assert "README.md: differs" in capsys.readouterr().out
    assert readme.read_text() == stale
    assert main(["publish", "--root", str(root)]) == 0
    assert main(["publish", "--root", str(root), "--check"]) == 0
    assert readme.read_bytes() == (REPO / "README.md").read_bytes()
