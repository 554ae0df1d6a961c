"""``oodgen compare DIR [DIR ...]``: finished runs side by side (what ``make quick`` prints last).

One AUROC column per run with its primary score, labelled by its Type I options; each run's
CVAE health line; a one-line reason beside every cell below chance (50).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .generate.health import health_line
from .tables import RULE_LABELS, auroc_cell


def _label(m: dict) -> str:
    v = m.get("variant", {})
    return f"{m['_dir']}: beta {v.get('beta')}, clip {v.get('clip_type1')}"


def compare_table(run_dirs) -> str:
    runs = []
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise ValueError(f"{path} is missing: run `oodgen run --out {d}` first")
        m = json.loads(path.read_text())
        m["_dir"] = str(d)
        runs.append(m)
    sets = list(dict.fromkeys(name for m in runs for name in m["ood"]))
    lines = ["AUROC % by OOD set; score: " + ", ".join(sorted({RULE_LABELS.get(m['score'], m['score']) for m in runs}))
             + "; higher is better", ""]
    lines.append("| OOD set | " + " | ".join(_label(m) for m in runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    notes = []
    for name in sets:
        cells = []
        for m in runs:
            row = m["ood"].get(name)
            if row is None:
                cells.append("-")
                continue
            cells.append(auroc_cell(row["auroc"], name, m.get("variant", {}), _label(m), notes))
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
