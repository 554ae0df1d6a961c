"""Rewrite the README's results table (between <!-- RESULTS-TABLE --> markers) from
results/summary_oodgen.json (written by scripts/summarize_results.py), so that every number
in it comes from committed runs.

    python scripts/summarize_results.py && python scripts/readme_table.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUSED = "ood-class+knn"


def _cell(c: dict, n: int) -> str:
    return f"{c['mean']:.1f}" + (f" ± {c['std']:.1f}" if n > 1 else "")


def block(doc: dict) -> str:
    out = []
    for setting, label in (("mnist", "MNIST"), ("fmnist", "F-MNIST"), ("mnist0-4", "MNIST 0-4"),
                           ("fmnist0-4", "F-MNIST 0-4")):
        if setting not in doc:
            continue
        d = doc[setting]
        n = len(d["seeds"])
        primary = d["score"]
        rules = [primary] + ([FUSED] if FUSED in d["ood_by_score"] and FUSED != primary else [])
        out.append(f"**{label}** as in-distribution: seeds {d['seeds']}; accuracy n+1 "
                   f"{sum(d['accuracy']) / n:.2f} %, plain n-class {sum(d['accuracy_plain']) / n:.2f} %.\n")
        out.append("| OOD set | " + " | ".join(f"AUROC ↑ `{r}`" for r in rules) + " | AUROC paper | "
                   + " | ".join(f"FPR95 ↓ `{r}`" for r in rules) + " | FPR95 paper |")
        out.append("|---|" + "---|" * (2 * len(rules) + 2))
        for name in d["ood_by_score"][primary]:
            au = [_cell(d["ood_by_score"][r][name]["auroc"], n) for r in rules]
            fp = [_cell(d["ood_by_score"][r][name]["fpr95"], n) for r in rules]
            p_au = d["ood_by_score"][primary][name]["auroc"]["paper"]
            p_fp = d["ood_by_score"][primary][name]["fpr95"]["paper"]
            out.append(f"| {name} | " + " | ".join(au) + f" | {'—' if p_au is None else p_au} | "
                       + " | ".join(fp) + f" | {'—' if p_fp is None else p_fp} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    doc = json.loads((ROOT / "results" / "summary_oodgen.json").read_text())
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- RESULTS-TABLE -->", "<!-- /RESULTS-TABLE -->"
    if start not in text or end not in text:
        raise SystemExit("README.md lacks the RESULTS-TABLE markers")
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: start + "\n" + block(doc) + end, text,
                 flags=re.S)
    readme.write_text(new)
    print(block(doc))


if __name__ == "__main__":
    main()
