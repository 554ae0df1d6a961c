"""`oodgen figures` and `oodgen report` on a smoke run."""
import argparse
import json

import numpy as np
import pytest
from PIL import Image

from oodgen.metrics import ood_metrics
from oodgen.report import add_parser, figure3, report, run_scores


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from oodgen.config import RunConfig
    from oodgen.run import run
    out = tmp_path_factory.mktemp("run")
    run(RunConfig(id="mnist", profile="smoke"), out, progress=False, log=lambda *_a: None)
    return out


def _parser():
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="command"))
    return ap


def test_recomputed_scores_match_metrics(smoke_run):
    s_in, s_out, rule = run_scores(smoke_run)
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert rule == metrics["score"] and set(s_out) == set(metrics["ood"])
    assert len(s_in) == metrics["n_test_in"]
    for name, scores in s_out.items():
        assert len(scores) == metrics["n_ood"][name]
        assert ood_metrics(s_in, scores)["auroc"] == pytest.approx(metrics["ood"][name]["auroc"], abs=1e-9)


def test_figures_cli(smoke_run, tmp_path):
    args = _parser().parse_args(["figures", str(smoke_run), "--out", str(tmp_path / "docs"), "--n-per-class", "2"])
    assert args.func(args) == 0
    for name in ("mnist_type1.png", "mnist_type2.png"):
        with Image.open(tmp_path / "docs" / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert len(np.unique(np.asarray(im.convert("L")))) > 2


def test_figures_default_folder(smoke_run):
    paths = figure3(smoke_run, n_per_class=1)
    assert [p.name for p in paths] == ["mnist_type1.png", "mnist_type2.png"]
    assert all(p.parent == smoke_run / "figures" and p.stat().st_size > 0 for p in paths)


def test_report(smoke_run):
    args = _parser().parse_args(["report", str(smoke_run)])
    assert args.func(args) == 0
    md = (smoke_run / "report.md").read_text()
    page = (smoke_run / "report.html").read_text()
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for name in metrics["ood"]:
        assert f"| {name} |" in md and f"<td>{name}</td>" in page
    assert f"{metrics['ood']['notmnist']['auroc']:.1f}" in md
    links = [line[line.index("](") + 2:-1] for line in md.splitlines() if line.startswith("![")]
    assert len(links) == 4 and all((smoke_run / link).is_file() for link in links)
    # Self-contained: every image embedded, no file references.
    assert page.count('src="data:image/png;base64,') == 4
    assert "report_files" not in page
    assert '"profile": "smoke"' in md and "&quot;profile&quot;: &quot;smoke&quot;" in page


def test_missing_run_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="oodgen run"):
        report(tmp_path)
    with pytest.raises(ValueError, match="oodgen run"):
        figure3(tmp_path)
