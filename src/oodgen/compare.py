"""``oodgen compare DIR [DIR ...]``: finished runs side by side (what ``make quick`` prints last).

Two AUROC columns per run, the recommended score and the paper's, labelled by its Type I options; each run's
CVAE health line; a one-line reason beside every cell below chance (50).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import RECOMMENDED, resolve_score
from .generate.health import health_line
from .tables import RULE_LABELS, auroc_cell


def _label(m: dict) -> str:
    v = m.get("variant", {})
    return f"{m['_dir']}: beta {v.get('beta')}, clip {v.get('clip_type1')}"


def _columns(m: dict) -> list[tuple[str, dict]]:
    """(rule, {OOD set: metrics}) shown for a run: the recommended score and the paper's beside it (from
    ``ood_by_score``, whatever the run's primary score was), else the run's primary score alone."""
    by_score = m.get("ood_by_score") or {}
    rules = [RECOMMENDED, m.get("score_paper") or resolve_score("paper", m.get("id", ""))]
    if all(r in by_score for r in rules):
        return [(r, by_score[r]) for r in dict.fromkeys(rules)]
    return [(m["score"], m["ood"])]


def compare_table(run_dirs) -> str:
    runs = []
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise ValueError(f"{path} is missing: run `oodgen run --out {d}` first")
        m = json.loads(path.read_text())
        m["_dir"] = str(d)
        runs.append(m)
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
