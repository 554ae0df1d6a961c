"""AUROC of every score rule and statistic of re-evaluated runs, before (``metrics.json`` at a
git revision) and after (the working tree), per OOD set: what a change of the scoring code (e.g.
the smaller nearest-neighbour banks of ``python -m experiments.choose_banks``) did to the committed numbers.

    python -m experiments.rule_drift --rev bcf6503 results/{mnist,fmnist,mnist0-4,fmnist0-4}/oodgen/seed0 \
        --out results/ablation/bank_reevaluation.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from oodgen.utils import atomic_write_json, environment


def aurocs(m: dict) -> dict[str, dict[str, float]]:
    out = {rule: {s: v["auroc"] for s, v in sets.items()} for rule, sets in m["ood_by_score"].items()}
    for stat, sets in (m.get("fisher_components") or {}).items():
        out[f"statistic {stat}"] = {s: v["auroc"] for s, v in sets.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--rev", required=True, help="git revision holding the 'before' metrics.json")
    ap.add_argument("--out", default="results/ablation/bank_reevaluation.json")
    a = ap.parse_args()
    rows, md = [], []
    for run in a.runs:
        path = Path(run) / "metrics.json"
        before = json.loads(subprocess.run(["git", "show", f"{a.rev}:{path}"], check=True,
                                           capture_output=True, text=True).stdout)
        after = json.loads(path.read_text())
        b, c = aurocs(before), aurocs(after)
        md += [f"### {run}", "", "| rule | " + " | ".join(next(iter(c.values()))) + " | max abs change |",
               "|---|" + "---|" * (len(next(iter(c.values()))) + 1)]
        for rule in c:
            if rule not in b:
                continue
            d = {s: c[rule][s] - b[rule][s] for s in c[rule] if s in b[rule]}
            worst = max(abs(v) for v in d.values())
            rows.append({"run": run, "rule": rule, "before": b[rule], "after": c[rule], "change": d,
                         "max_abs_change": worst})
            md.append(f"| {rule} | " + " | ".join(f"{b[rule][s]:.2f} → {c[rule][s]:.2f}" for s in d)
                      + f" | {worst:.2f} |")
        md.append("")
        print("\n".join(md[-(len(c) + 4):]))
    atomic_write_json(a.out, {"rev_before": a.rev, "rows": rows, "environment": environment(),
                              "command": "python -m experiments.rule_drift " + " ".join(sys.argv[1:])})
    Path(a.out).with_suffix(".md").write_text(
        f"# AUROC before ({a.rev}) and after re-evaluation\n\n`python -m experiments.rule_drift "
        + " ".join(sys.argv[1:]) + "`\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
