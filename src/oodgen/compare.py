"""``oodgen compare DIR [DIR ...]``: finished runs side by side (what ``make quick`` prints last).

Two AUROC columns per run, the recommended score and the paper's, labelled by its Type I options; each run's
CVAE health line; a one-line reason beside every cell below chance (50).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import RECOMMENDED, resolve_score
from .generate.health import health_line
from .summary import RULE_LABELS, auroc_cell, results_by_score
from .utils import read_json_object


def _label(m: dict) -> str:
    v = m.get("variant", {})
    return f"{m['_dir']}: beta {v.get('beta')}, clip {v.get('clip_type1')}"


def _columns(m: dict) -> list[tuple[str, dict]]:
    """(rule, {OOD set: metrics}) shown for a run: the recommended score and the paper's beside it (from
    ``ood_by_score``, whatever the run's primary score was), else the run's primary score alone."""
    by_score = results_by_score(m)
    paper = m.get("score_paper") if isinstance(m.get("score_paper"), str) else resolve_score("paper", str(m.get("id", "")))
    rules = [RECOMMENDED, paper]
    if all(_is_table(by_score.get(r)) for r in rules):
        return [(r, by_score[r]) for r in dict.fromkeys(rules)]
    return [(m["score"], m["ood"])]


def read_metrics(run_dir) -> dict:
    """A finished run's ``metrics.json`` with what the table reads checked (a ValueError naming the
    file otherwise); ``"_dir"`` is added."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        raise ValueError(f"{path} is missing: run `oodgen run --out {run_dir}` first")
    m = read_json_object(path)
    ood, variant, health = m.get("ood"), m.get("variant", {}), m.get("cvae_health")
    if not (_is_table(ood) and isinstance(m.get("score"), str) and isinstance(variant, dict)):
        raise ValueError(f"{path}: not the metrics of a finished `oodgen run` (it needs 'score', 'variant' and "
                         "an AUROC for every OOD set under 'ood'); it is damaged")
    if health:
        try:
            health_line(health)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{path}: damaged 'cvae_health' entry") from None
    return {**m, "_dir": str(run_dir)}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_table(t) -> bool:
    """{OOD set: metrics} with an AUROC for every set (the ``ood`` / ``ood_by_score`` entries)."""
    return isinstance(t, dict) and all(isinstance(r, dict) and _is_number(r.get("auroc")) for r in t.values())


def compare_table(run_dirs) -> str:
    runs = [read_metrics(d) for d in run_dirs]
    columns = [(m, rule, table) for m in runs for rule, table in _columns(m)]
    sets = list(dict.fromkeys(name for m in runs for name in m["ood"]))
    lines = ["AUROC % by OOD set (higher is better); for each run the recommended score "
             f"({RECOMMENDED}, docs/protocol.md) and the paper's beside it", ""]
    lines.append("| OOD set | " + " | ".join(f"{_label(m)}, {RULE_LABELS.get(r, r)}" for m, r, _t in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    notes = []
    for name in sets:
        cells = []
        for m, rule, table in columns:
            row = table.get(name)
            if row is None:
                cells.append("-")
            elif rule in ("ood-class", "max-in"):
                cells.append(auroc_cell(row["auroc"], name, m.get("variant", {}), _label(m), notes))
            else:
                cells.append(f"{row['auroc']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"({i}) {n}" for i, n in enumerate(notes, 1)]
    lines += [f"{m['_dir']}: {health_line(m['cvae_health'])}" for m in runs if m.get("cvae_health")]
    return "\n".join(lines) + "\n"


def _cmd(a: argparse.Namespace) -> int:
    print(compare_table(a.dirs), end="")
    return 0


def add_parser(subparsers) -> None:
    c = subparsers.add_parser("compare", help="finished runs side by side (AUROC per OOD set, CVAE health)")
    c.add_argument("dirs", nargs="+", help="run directories written by `oodgen run`")
    c.set_defaults(func=_cmd)
