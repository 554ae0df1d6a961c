"""Rewrite the generated blocks of the README and docs/ from committed results, so that every
number in them comes from a run:

* README.md <!-- RESULTS-GLANCE --> and docs/results.md <!-- RESULTS-TABLE --> from
  results/summary_oodgen.json (scripts/summarize_results.py);
* docs/benchmark.md <!-- BENCH-SUMMARY --> from results/tables/summary.json
  (`oodgen bench ... --tables-only`).

    python scripts/summarize_results.py && oodgen bench --id all --out results --tables-only \
        && python scripts/readme_table.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from oodgen.config import RECOMMENDED
from oodgen.data import PAPER_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
FUSED = ("ood-class+knn", "reject+knn", "reject+fisher")
FOOTNOTE = ("† beyond the paper: p(n+1) fused with nearest-neighbour distances and CVAE statistics, designed after "
            "looking at seed-0 test OOD sets of earlier runs; docs/protocol.md chooses the recommended score on "
            "validation signals only.")


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
        rules = list(dict.fromkeys([RECOMMENDED, "ood-class", primary]))
        rules += [r for r in FUSED if r in d["ood_by_score"] and r not in rules]
        out.append(f"**{label}** as in-distribution: seeds {d['seeds']}; accuracy n+1 "
                   f"{sum(d['accuracy']) / n:.2f} %, plain n-class {sum(d['accuracy_plain']) / n:.2f} %.\n")
        def label(r: str) -> str:
            return f"`{r}`" + (" (recommended)" if r == RECOMMENDED else "") + (" †" if r in FUSED else "")

        out.append("| OOD set | " + " | ".join(f"AUROC ↑ {label(r)}" for r in rules) + " | AUROC paper | "
                   + " | ".join(f"FPR95 ↓ {label(r)}" for r in rules) + " | FPR95 paper |")
        out.append("|---|" + "---|" * (2 * len(rules) + 2))
        for name in d["ood_by_score"][primary]:
            au = [_cell(d["ood_by_score"][r][name]["auroc"], n) for r in rules]
            fp = [_cell(d["ood_by_score"][r][name]["fpr95"], n) for r in rules]
            p_au = d["ood_by_score"][primary][name]["auroc"]["paper"]
            p_fp = d["ood_by_score"][primary][name]["fpr95"]["paper"]
            # the paper's column is the paper's own score: p(n+1), except max-in on MNIST 0-4
            out.append(f"| {name} | " + " | ".join(au) + f" | {'—' if p_au is None else p_au} | "
                       + " | ".join(fp) + f" | {'—' if p_fp is None else p_fp} |")
        out.append("")
    out.append(FOOTNOTE + "\n")
    return "\n".join(out)


def _rule_label(r: str) -> str:
    return f"`{r}`" + (" (recommended)" if r == RECOMMENDED else "") + (" †" if r in FUSED else "")


def glance_block(doc: dict) -> str:
    """One row per setting: the mean and lowest AUROC over the OOD sets of the recommended score, of
    p(n+1) and of reject+fisher (†) (each once), and the paper's lowest."""
    rules = list(dict.fromkeys([RECOMMENDED, "ood-class", "reject+fisher"]))
    out = ["| in-distribution | seeds | " + " | ".join(f"{_rule_label(r)}: mean, lowest" for r in rules)
           + " | paper, lowest |", "|---|---|" + "---|" * (len(rules) + 1)]
    for setting, label in (("mnist", "MNIST"), ("fmnist", "F-MNIST"), ("mnist0-4", "MNIST 0-4"),
                           ("fmnist0-4", "F-MNIST 0-4")):
        if setting not in doc:
            continue
        d = doc[setting]
        cells = []
        for r in rules:
            ours = {k: v["auroc"]["mean"] for k, v in d["ood_by_score"].get(r, {}).items()}
            low = min(ours, key=ours.get) if ours else None
            cells.append(f"{sum(ours.values()) / len(ours):.1f}, {ours[low]:.1f} ({low})" if low else "—")
        paper = {k: v["auroc"]["paper"] for k, v in d["ood_by_score"][d["score"]].items() if v["auroc"]["paper"] is not None}
        p_low = min(paper, key=paper.get) if paper else None
        out.append(f"| {label} | {len(d['seeds'])} | " + " | ".join(cells) + " | "
                   + (f"{paper[p_low]:.1f} ({p_low})" if p_low else "—") + " |")
    return "\n".join(out) + "\n\n" + FOOTNOTE + "\n"


def bench_block(doc: dict) -> str:
    from oodgen.tables import DISPLAY
    settings = [s for s in PAPER_SETTINGS if s in doc["settings"]]
    methods = []
    for s in settings:
        for m in doc["settings"][s]:
            if m not in methods:
                methods.append(m)
    out = ["| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    best = {s: max(v["mean_auroc"] for v in doc["settings"][s].values()) for s in settings}
    for m in methods:
        cells = []
        for s in settings:
            v = doc["settings"][s].get(m)
            if v is None:
                cells.append("–")
                continue
            txt = f"{v['mean_auroc']:.2f} ({v['n']})"
            cells.append(f"**{txt}**" if v["mean_auroc"] == best[s] else txt)
        out.append(f"| {DISPLAY.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _replace(text: str, tag: str, body: str, where: str) -> str:
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{where} lacks the {tag} markers")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: start + "\n" + body + end, text, flags=re.S)


def _rewrite(path: Path, blocks: dict[str, str]) -> str:
    text = path.read_text()
    for tag, body in blocks.items():
        text = _replace(text, tag, body, str(path.relative_to(ROOT)))
    path.write_text(text)
    return text


def main() -> None:
    summary = json.loads((ROOT / "results" / "summary_oodgen.json").read_text())
    _rewrite(ROOT / "README.md", {"RESULTS-GLANCE": glance_block(summary)})
    text = _rewrite(ROOT / "docs" / "results.md", {"RESULTS-TABLE": block(summary)})
    bench = ROOT / "results" / "tables" / "summary.json"
    if bench.exists():
        _rewrite(ROOT / "docs" / "benchmark.md", {"BENCH-SUMMARY": bench_block(json.loads(bench.read_text()))})
    print(glance_block(summary))
    print(text[text.index("<!-- RESULTS-TABLE -->"):text.index("<!-- /RESULTS-TABLE -->")][:400], "...")


if __name__ == "__main__":
    main()
