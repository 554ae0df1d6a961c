"""``oodgen publish``: the summary of our committed runs, and the generated blocks of the README and
docs, so that every number they show comes from a run.

It writes, under a repository checkout ``ROOT`` (default: the current directory):

* ``results/summary_oodgen.md`` and its JSON twin: mean ± std over seeds of every metric of our runs
  (``results/<id>/oodgen/seed*/metrics.json``) beside the paper's Table 1 "Ours" numbers, for
  p(n+1), the run's primary score and, where every run of a setting recorded them, the fused rules
  ``ood-class+knn``, ``reject+knn`` and ``reject+fisher`` (beyond the paper);
* the block between ``<!-- RESULTS-GLANCE -->`` and ``<!-- /RESULTS-GLANCE -->`` of ``README.md``
  and the ``RESULTS-TABLE`` block of ``docs/results.md``, from that summary;
* the ``BENCH-SUMMARY`` block of ``docs/benchmark.md``, from ``results/tables/summary.json``
  (written by ``oodgen bench --id all --out results --tables-only``), when that file exists, and its
  ``BUDGET`` block from ``results/tables/budget.json`` (:mod:`oodgen.bench.budget`).

Running it twice changes nothing the second time; ``--check`` writes nothing and fails when a file
is not what the committed results give::

    oodgen bench --id all --out results --tables-only && oodgen publish
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import RECOMMENDED, Variant
from .data import PAPER_SETTINGS
from .summary import METRIC_LABELS, fewer_seeds, results_by_score
from .bench.budget import budget_rows_markdown
from .bench.tables import DISPLAY, paper_tables
from .utils import atomic_write_bytes

#: The fused rules beyond the paper, marked † wherever they are shown.
FUSED = ("ood-class+knn", "reject+knn", "reject+fisher")
FOOTNOTE = (f"`{RECOMMENDED}` (recommended): chosen among every rule, with the cosine head (`--head cosine`), by "
            "round 6 of docs/protocol.md on validation signals only (its pixel guard, like the class guard of rounds "
            "3-5, was designed after the test tables showed `feature-knn`, round 1's choice, losing to pixel KNN on "
            "stroke-like sets). "
            "† beyond the paper: p(n+1) fused with nearest-neighbour distances and CVAE statistics, designed after "
            "looking at seed-0 test OOD sets of earlier runs.")
#: The summary's column order (the paper's Table 1 puts AUPR-out before AUPR-in).
SUMMARY_METRICS = ("fpr95", "detection_error", "auroc", "aupr_in", "aupr_out")
LABELS = {"mnist": "MNIST", "fmnist": "F-MNIST", "mnist0-4": "MNIST 0-4", "fmnist0-4": "F-MNIST 0-4"}


class PublishError(ValueError):
    """A file that ``oodgen publish`` rewrites lacks its markers, or the results it reads are missing."""


# ----------------------------------------------------------------------------- results/summary_oodgen.*

def _plus_minus(values: np.ndarray, digits: int) -> str:
    """`` ± std`` over seeds; nothing for one seed (no spread to show)."""
    return f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""


def _health_line(runs: list[dict]) -> str:
    health = [r.get("cvae_health") for r in runs]
    if not all(health):
        return "CVAE health: not recorded by some runs (written before the health check)\n"
    collapsed = [str(r["seed"]) for r, h in zip(runs, health) if h["collapsed"]]
    return ("CVAE health per seed: active dims " + ", ".join(f"{h['active_dims']}/{h['latent_dim']}" for h in health)
            + "; reconstruction / class mean " + ", ".join(f"{h['recon_ratio']:.2f}" for h in health)
            + "; Type II spread ratio " + ", ".join(f"{h.get('spread_ratio', float('nan')):.2f}" for h in health)
            + (f"; **collapsed: {', '.join(collapsed)}**" if collapsed else "; none collapsed") + "\n")


def _summary_rules(runs: list[dict]) -> list[str]:
    """The recommended score and p(n+1), the paper's score, always; the run's primary score (max-in on
    MNIST 0-4); the fused rules that every run recorded."""
    rules = [r for r in dict.fromkeys([RECOMMENDED, "feature-knn", "ood-class", runs[0]["score"]])
             if any(r in x["ood_by_score"] for x in runs)]      # a new rule: the runs that record it
    return rules + [r for r in FUSED if r not in rules and all(r in x.get("ood_by_score", {}) for x in runs)]


def _rule_table(runs: list[dict], rule: str, paper: dict) -> tuple[list[str], dict]:
    """The Markdown table of one score rule (one row per OOD set, over the runs that record it) and its JSON twin."""
    runs = [r for r in runs if rule in r["ood_by_score"]]
    lines = [f"Score `{rule}` (seeds {[r['seed'] for r in runs]}):\n",
             "| OOD set | " + " | ".join(f"{METRIC_LABELS[m]} ours (paper)" for m in SUMMARY_METRICS) + " |",
             "|---|" + "---|" * len(SUMMARY_METRICS)]
    table: dict = {}
    for name in runs[0]["ood"]:
        cells, table[name] = [], {}
        for m in SUMMARY_METRICS:
            vals = np.array([r["ood_by_score"][rule][name][m] for r in runs])
            std = vals.std(ddof=1) if len(vals) > 1 else 0.0
            p = paper.get(name, {}).get(m, {}).get("oodgen")
            cells.append(f"{vals.mean():.1f}{_plus_minus(vals, 1)} ({'—' if p is None else p})")
            table[name][m] = {"mean": float(vals.mean()), "std": float(std), "paper": p, "n": len(runs)}
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""], table


def _setting_summary(setting: str, runs: list[dict], paper: dict) -> tuple[list[str], dict]:
    seeds = [r["seed"] for r in runs]
    # options added later read as their defaults, so that runs written before them and after show one variant
    variants = {json.dumps(asdict(Variant.from_dict(r["variant"])), sort_keys=True) for r in runs}
    profiles = {r["profile"] for r in runs}
    acc = np.array([r["accuracy"] for r in runs])
    acc_plain = np.array([r["accuracy_plain"] for r in runs])
    paper_acc = paper["table1"]["accuracy"].get(setting, {})
    lines = [f"### {setting} (profile {', '.join(sorted(profiles))}; seeds {seeds}; score {runs[0]['score']})\n",
             f"Variant: `{', '.join(sorted(variants))}`\n",
             f"Accuracy: n+1 {acc.mean():.2f}{_plus_minus(acc, 2)} %, plain n-class "
             f"{acc_plain.mean():.2f}{_plus_minus(acc_plain, 2)} % "
             f"(paper: {paper_acc.get('oodgen')} / {paper_acc.get('plain')})\n",
             _health_line(runs)]
    health = [r.get("cvae_health") for r in runs]
    doc = {"seeds": seeds, "accuracy": acc.tolist(), "accuracy_plain": acc_plain.tolist(),
           "score": runs[0]["score"], "ood": {}, "ood_by_score": {},
           "cvae_health": [{k: h[k] for k in ("active_dims", "latent_dim", "recon_ratio", "collapsed")}
                           for h in health] if all(health) else None}
    for rule in _summary_rules(runs):
        table_lines, doc["ood_by_score"][rule] = _rule_table(runs, rule, paper["table1"]["results"].get(setting, {}))
        lines += table_lines
    doc["ood"] = doc["ood_by_score"][runs[0]["score"]]
    return lines, doc


def summarize(results: str | Path) -> tuple[str, dict]:
    """The Markdown text and the JSON document of ``results/summary_oodgen.*``: our runs under
    ``results/<id>/oodgen/seed*/`` of each of the paper's settings, beside the paper's Table 1."""
    results = Path(results)
    paper = paper_tables()
    lines: list[str] = []
    doc: dict = {}
    for setting in PAPER_SETTINGS:
        runs = [json.loads(p.read_text()) for p in sorted((results / setting / "oodgen").glob("seed*/metrics.json"))]
        runs = [{**r, "ood_by_score": results_by_score(r)} for r in runs]     # feature-knn of older runs too
        if runs:
            setting_lines, doc[setting] = _setting_summary(setting, runs, paper)
            lines += setting_lines
    return "\n".join(lines) + "\n", doc


# ----------------------------------------------------------------------------- generated blocks

def _rule_label(r: str) -> str:
    return (f"`{r}`" + (" (recommended)" if r == RECOMMENDED else "") + (" (round 1)" if r == "feature-knn" else "")
            + (" (round 2)" if r == "feature-knn+pixel-guard@max" else "")
            + (" †" if r in FUSED else ""))


def _cell(c: dict, n: int) -> str:
    """mean ± std over the cell's runs; "(n = k)" where fewer than the setting's ``n`` seeds record the rule."""
    k = c.get("n", n)
    return f"{c['mean']:.1f}" + (f" ± {c['std']:.1f}" if k > 1 else "") + fewer_seeds(k, n)


def results_block(summary: dict) -> str:
    """docs/results.md's table: per setting, AUROC and FPR95 of the recommended score, p(n+1), the
    primary score and the fused rules, beside the paper's."""
    out = []
    for setting, label in LABELS.items():
        if setting not in summary:
            continue
        d = summary[setting]
        n = len(d["seeds"])
        primary = d["score"]
        rules = [r for r in dict.fromkeys([RECOMMENDED, "feature-knn", "ood-class", primary]) if r in d["ood_by_score"]]
        rules += [r for r in FUSED if r in d["ood_by_score"] and r not in rules]
        out.append(f"**{label}** as in-distribution: seeds {d['seeds']}; accuracy n+1 "
                   f"{sum(d['accuracy']) / n:.2f} %, plain n-class {sum(d['accuracy_plain']) / n:.2f} %.\n")
        out.append("| OOD set | " + " | ".join(f"AUROC ↑ {_rule_label(r)}" for r in rules) + " | AUROC paper | "
                   + " | ".join(f"FPR95 ↓ {_rule_label(r)}" for r in rules) + " | FPR95 paper |")
        out.append("|---|" + "---|" * (2 * len(rules) + 2))
        for name in d["ood_by_score"][primary]:
            au = [_cell(d["ood_by_score"][r][name]["auroc"], n) for r in rules]
            fp = [_cell(d["ood_by_score"][r][name]["fpr95"], n) for r in rules]
            # the paper's column is the paper's own score: p(n+1), except max-in on MNIST 0-4
            p_au = d["ood_by_score"][primary][name]["auroc"]["paper"]
            p_fp = d["ood_by_score"][primary][name]["fpr95"]["paper"]
            out.append(f"| {name} | " + " | ".join(au) + f" | {'—' if p_au is None else p_au} | "
                       + " | ".join(fp) + f" | {'—' if p_fp is None else p_fp} |")
        out.append("")
    out.append(FOOTNOTE + "\n")
    return "\n".join(out)


def glance_block(summary: dict) -> str:
    """The README's table: one row per setting, the mean and lowest AUROC over the OOD sets of the
    recommended score, of p(n+1) and of reject+fisher (†) (each once), and the paper's lowest."""
    rules = list(dict.fromkeys([RECOMMENDED, "feature-knn", "ood-class", "reject+fisher"]))
    out = ["| in-distribution | seeds | " + " | ".join(f"{_rule_label(r)}: mean, lowest" for r in rules)
           + " | paper, lowest |", "|---|---|" + "---|" * (len(rules) + 1)]
    for setting, label in LABELS.items():
        if setting not in summary:
            continue
        d = summary[setting]
        cells = []
        for r in rules:
            ours = {k: v["auroc"]["mean"] for k, v in d["ood_by_score"].get(r, {}).items()}
            low = min(ours, key=ours.get) if ours else None
            k = min((v["auroc"].get("n", len(d["seeds"])) for v in d["ood_by_score"].get(r, {}).values()), default=0)
            cells.append((f"{sum(ours.values()) / len(ours):.1f}, {ours[low]:.1f} ({low})"
                          + fewer_seeds(k, len(d["seeds"]))) if low else "—")
        paper = {k: v["auroc"]["paper"] for k, v in d["ood_by_score"][d["score"]].items() if v["auroc"]["paper"] is not None}
        p_low = min(paper, key=paper.get) if paper else None
        out.append(f"| {label} | {len(d['seeds'])} | " + " | ".join(cells) + " | "
                   + (f"{paper[p_low]:.1f} ({p_low})" if p_low else "—") + " |")
    return "\n".join(out) + "\n\n" + FOOTNOTE + "\n"


def bench_block(bench_summary: dict) -> str:
    """docs/benchmark.md's table: mean AUROC per method and setting (n seeds), the best in bold."""
    settings = [s for s in PAPER_SETTINGS if s in bench_summary["settings"]]
    methods = list(dict.fromkeys(m for s in settings for m in bench_summary["settings"][s]))
    out = ["| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    best = {s: max(v["mean_auroc"] for v in bench_summary["settings"][s].values()) for s in settings}
    for m in methods:
        cells = []
        for s in settings:
            v = bench_summary["settings"][s].get(m)
            if v is None:
                cells.append("–")
                continue
            txt = f"{v['mean_auroc']:.2f} ({v['n']})"
            cells.append(f"**{txt}**" if v["mean_auroc"] == best[s] else txt)
        out.append(f"| {DISPLAY.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def replace_block(text: str, tag: str, body: str, where: str = "the text") -> str:
    """``text`` with what lies between ``<!-- TAG -->`` and ``<!-- /TAG -->`` replaced by ``body``."""
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    if start not in text or end not in text:
        raise PublishError(f"{where} lacks the {tag} markers ({start} ... {end})")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: start + "\n" + body + end, text, flags=re.S)


# ----------------------------------------------------------------------------- the command

def published_files(root: str | Path = ".") -> dict[Path, str]:
    """{path: the content ``oodgen publish`` gives it} for every file it writes under ``root``."""
    root = Path(root)
    results = root / "results"
    if not results.is_dir():
        raise PublishError(f"{results} is missing: run `oodgen publish` in the repository checkout or pass --root")
    summary_md, summary = summarize(results)
    files = {results / "summary_oodgen.md": summary_md,
             results / "summary_oodgen.json": json.dumps(summary, indent=2) + "\n"}
    blocks = {root / "README.md": {"RESULTS-GLANCE": glance_block(summary)},
              root / "docs" / "results.md": {"RESULTS-TABLE": results_block(summary)}}
    bench = results / "tables" / "summary.json"
    if bench.exists():
        blocks[root / "docs" / "benchmark.md"] = {"BENCH-SUMMARY": bench_block(json.loads(bench.read_text()))}
    budget = results / "tables" / "budget.json"
    if budget.exists():
        blocks.setdefault(root / "docs" / "benchmark.md", {})["BUDGET"] = budget_rows_markdown(json.loads(budget.read_text()))
    for path, tags in blocks.items():
        if not path.is_file():
            raise PublishError(f"{path} is missing: run `oodgen publish` in the repository checkout or pass --root")
        text = path.read_text()
        for tag, body in tags.items():
            text = replace_block(text, tag, body, str(path.relative_to(root)))
        files[path] = text
    return files


def publish(root: str | Path = ".", check: bool = False) -> list[Path]:
    """Write every file of :func:`published_files` whose content differs; return those files.
    ``check``: write nothing, only return them."""
    changed = []
    for path, text in published_files(root).items():
        if path.is_file() and path.read_text() == text:
            continue
        changed.append(path)
        if not check:
            atomic_write_bytes(path, text.encode())
    return changed


def _cmd(a: argparse.Namespace) -> int:
    changed = publish(a.root, check=a.check)
    for path in changed:
        print(f"{path}: {'differs from what the results give' if a.check else 'rewritten'}")
    if not changed:
        print("every published file matches the results")
    return 1 if a.check and changed else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``oodgen publish`` to the CLI's subparsers."""
    p = subparsers.add_parser("publish", help="write results/summary_oodgen.* and the README/docs result blocks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="the repository checkout (default: the current directory)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when a file differs from what the committed results give")
    p.set_defaults(func=_cmd)
    return p
