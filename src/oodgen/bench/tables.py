"""The bench's tables: which methods it knows and how they are named (read from the registry), and the
rendering of the per-method ``metrics.json`` files into
``DIR/tables/{table1,table2,extra,summary,deviations,recommended}.*``.

:func:`build_tables` is what ``oodgen bench --tables-only`` calls, and :func:`tables_of_everything` (the
tables of every job in the bench's folder) what ``oodgen bench`` calls last.  One run's own summary (what ``oodgen run`` prints) is
:mod:`oodgen.summary`.
"""
from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import RECOMMENDED, resolve_score
from ..data.datasets import PAPER_SETTINGS as SETTINGS
from ..detectors.base import BenchInfo
from ..detectors.registry import DETECTORS
from ..summary import METRIC_LABELS, mean_std, results_by_score
from ..utils import atomic_write_bytes, atomic_write_json
from .budget import write_budget_table
from .jobs import job_dir, job_key, seeds_in

# Our rows of Table 1: "Ours" is the recommended score (docs/protocol.md), then the paper's p(n+1) and every
# other rule of the same trained runs (the derived rows: DERIVED below).
_RULE_ROWS = {"oodgen+feature": ("feature-knn", "Ours feature-knn (round 1's choice)"),
              "oodgen+guard": ("feature-knn+pixel-guard@max", "Ours pixel guard (round 2's choice)"),
              "oodgen+class-guard": ("feature-knn+class-pixel-guard@max", "Ours class guard (rounds 3-5's choice)"),
              "oodgen+knn": ("ood-class+knn", "Ours ood-class+KNN"), "oodgen+reject": ("reject+knn", "Ours reject+KNN"),
              "oodgen+fisher": ("reject+fisher", "Ours reject+Fisher")}
OURS = {"oodgen": f"Ours ({RECOMMENDED}, recommended)", "oodgen-paper": "Ours, paper's score",
        **{m: label for m, (rule, label) in _RULE_ROWS.items() if rule != RECOMMENDED}}
TABLE_TITLES = {"table1": "Table 1: Ours / Confident classifier / ODIN / Mahalanobis",
                "table2": "Table 2: max-softmax / MC-dropout / mutual information",
                "extra": "Extra baselines (not in the paper)"}


# Everything below is read from the registry (each detector class's BenchInfo) when it is
# called, so a newly registered detector is benchmarked and tabled with no edit here.
def method_infos() -> dict[str, BenchInfo]:
    """{method: its detector class's BenchInfo} of every registered detector the bench runs."""
    return {name: cls.bench_info for name, cls in DETECTORS.items() if getattr(cls, "bench_info", None)}


def method_info(method: str) -> BenchInfo:
    """The BenchInfo of ``method`` (a -fair variant: its tuned method's)."""
    return method_infos()[method.removesuffix("-fair")]


def methods_by(consumes: str) -> tuple[str, ...]:
    """Bench methods whose detector consumes ``consumes`` (with the -fair variants of tuned ones)."""
    out = [n for n, i in method_infos().items() if i.consumes == consumes]
    if consumes == "tuned":
        out += [f"{n}-fair" for n, i in method_infos().items() if i.consumes == "tuned" and i.fair_variant]
    return tuple(out)


def all_methods() -> tuple[str, ...]:
    """Every method ``oodgen bench`` knows, in table order: ours, then each table's baselines."""
    out = ["oodgen"]
    for table in TABLE_TITLES:
        names = [n for n, i in method_infos().items() if i.table == table]
        out += names + [f"{n}-fair" for n in names if method_infos()[n].fair_variant]
    return tuple(out)


#: Run only when named: VOS's alpha = 0 control trains the plain classifier weight for weight (tests/test_vos.py),
#: so on the machine that trained a run's plain classifier its scores are the ``energy`` column's.
ON_REQUEST = ("vos-alpha0",)


def default_methods() -> tuple[str, ...]:
    return tuple(m for m in all_methods() if not m.endswith("-fair") and m not in ON_REQUEST)


def bench_tables() -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for table, title in TABLE_TITLES.items():
        rows = [m for m in all_methods() if m != "oodgen" and method_info(m).table == table]
        out[table] = (title, (tuple(OURS) if table == "table1" else ()) + tuple(rows))
    return out


def display(method: str) -> str:
    if method in OURS:
        return OURS[method]
    if method.removesuffix("-fair") not in method_infos():
        return method           # e.g. "plain" (the plain classifier's accuracy)
    return method_info(method).display + (" (fair)" if method.endswith("-fair") else "")


def score_used(method: str) -> str:
    return method_info(method).score


# Import-time snapshots for readers of the module (the bench itself calls the functions above).
METHODS = all_methods()
DEFAULT_METHODS = default_methods()
TABLES = bench_tables()
DISPLAY = {m: display(m) for m in (*OURS, *METHODS[1:])}
TABLE_METRICS = ("fpr95", "detection_error", "auroc", "aupr_out", "aupr_in")   # the paper's column order


def paper_tables() -> dict:
    """The paper's Tables 1 and 2 (see ``paper_tables.json`` for the transcription notes)."""
    return json.loads(resources.files("oodgen").joinpath("paper_tables.json").read_text())


#: Table columns computed from another method's runs: (source method, its score rule).  "Ours" itself is
#: the recommended rule of our runs, whatever primary score a run was written with.
DERIVED = {"oodgen": ("oodgen", "recommended"), "oodgen-paper": ("oodgen", "paper"),
           **{m: ("oodgen", rule) for m, (rule, _label) in _RULE_ROWS.items() if rule != RECOMMENDED}}
#: The paper's value shown beside a row is the paper's own method's (its score is p(n+1)).
PAPER_KEY = {"oodgen-paper": "oodgen"}


def _load_metrics(out: Path, setting: str, method: str, seeds) -> list[dict]:
    source, rule = DERIVED.get(method, (method, None))
    paths = [job_dir(out, setting, source, s) / "metrics.json" for s in seeds]
    runs = [json.loads(p.read_text()) for p in paths if p.exists()]
    if rule is None:
        return runs
    rule = resolve_score(rule, setting)
    # The same trained n+1 classifier scored by another rule (recorded by `oodgen run`).
    return [{**r, "method": method, "score": rule, "ood": results_by_score(r)[rule]}
            for r in runs if rule in results_by_score(r)]


def _write_summary(out: Path, settings, seeds) -> dict:
    """Mean AUROC over every OOD set of a setting, per method (seeds averaged first)."""
    methods = [m for _t, (_title, ms) in bench_tables().items() for m in ms]
    doc = {"title": "Mean AUROC over the OOD sets of each setting", "seeds": list(seeds), "settings": {}}
    lines = ["# Mean AUROC over the OOD sets of each setting", "",
             f"Each cell: AUROC averaged over seeds (those of {list(seeds)} that ran), then over the OOD sets; "
             "the best of each setting in bold; n = seeds.  Methods whose runs miss an OOD set are left out.", ""]
    for setting in settings:
        row = {}
        for m in methods:
            runs = _load_metrics(out, setting, m, seeds)
            if not runs:
                continue
            names = set(runs[0]["ood"])
            if any(set(r["ood"]) != names for r in runs):
                continue
            # sorted: a set's order changes between processes, and with it the sum's last digit
            row[m] = {"mean_auroc": float(np.mean([np.mean([r["ood"][n]["auroc"] for r in runs]) for n in sorted(names)])),
                      "n": len(runs), "ood_sets": sorted(names)}
        if not row:
            continue
        doc["settings"][setting] = row
        best = max(v["mean_auroc"] for v in row.values())
        lines += [f"## {setting}", "", "| method | mean AUROC | n |", "|---|---|---|"]
        for m, v in sorted(row.items(), key=lambda kv: -kv[1]["mean_auroc"]):
            cell = f"{v['mean_auroc']:.2f}"
            lines.append(f"| {display(m)} | {'**' + cell + '**' if v['mean_auroc'] == best else cell} | {v['n']} |")
        lines.append("")
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "summary.md", "\n".join(lines).encode())
    atomic_write_json(folder / "summary.json", doc)
    return doc


def build_tables(out, settings=SETTINGS, seeds=(0, 1, 2)) -> dict:
    """Aggregate the per-method metrics.json files into ``DIR/tables/{table1,table2,extra}.*``."""
    out = Path(out)
    paper = paper_tables()
    tables = {}
    for table, (title, methods) in bench_tables().items():
        paper_key = table if table in ("table1", "table2") else None
        doc = {"table": table, "title": title, "methods": [], "metrics": list(TABLE_METRICS), "seeds": list(seeds),
               "settings": {}, "cell": "mean and sample std over seeds (percent); paper = the paper's value",
               "paper_source": paper["source"] if paper_key else None}
        present = set()
        for setting in settings:
            runs = {m: r for m in methods if (r := _load_metrics(out, setting, m, seeds))}
            if not runs:
                continue
            present.update(runs)
            ptab = paper[paper_key]["results"].get(setting, {}) if paper_key else {}
            ood_names = list(ptab) + sorted({n for r in runs.values() for m in r for n in m["ood"]} - set(ptab))
            rows = {}
            for name in ood_names:
                rows[name] = {}
                for metric in TABLE_METRICS:
                    cells = {}
                    for m in methods:
                        vals = [r["ood"][name][metric] for r in runs.get(m, []) if name in r["ood"]]
                        p = ptab.get(name, {}).get(metric, {}).get(PAPER_KEY.get(m, m))
                        if vals or p is not None:
                            cells[m] = {**(mean_std(vals) if vals else {"mean": None, "std": None, "n": 0}),
                                        "seeds": [r["seed"] for r in runs.get(m, []) if name in r["ood"]],
                                        "paper": p}
                    rows[name][metric] = cells
            acc = {m: mean_std([r["accuracy"] for r in rs]) for m, rs in runs.items()
                   if rs and all(r.get("accuracy") is not None for r in rs)}   # not CLASSIFIER_FREE ones
            plain = [r["accuracy_plain"] for r in runs.get("oodgen", []) if "accuracy_plain" in r]
            if plain:
                acc["plain"] = mean_std(plain)
            doc["settings"][setting] = {
                "accuracy": acc, "ours_heads": ours_heads(runs.get("oodgen", [])),
                "paper_accuracy": paper["table1"]["accuracy"].get(setting) if table == "table1" else None,
                "rows": rows}
        doc["methods"] = [m for m in methods if m in present or (paper_key and m in paper[paper_key]["methods"])]
        tables[table] = doc
        _write_table(out / "tables", table, doc, paper)
    tables["summary"] = _write_summary(out, settings, seeds)
    tables["deviations"] = _write_deviations(out / "tables", tables)
    tables["recommended"] = _write_recommended_checks(out / "tables", tables)
    tables["budget"] = write_budget_table(out, out / "tables", paper["table1"])
    return tables



def tables_of_everything(out, settings, seeds) -> dict:
    """The tables of every setting and seed in ``out`` (and of ``settings`` / ``seeds``), so that a
    bench of one setting or seed does not rewrite the tables without the others."""
    root = Path(out)
    settings_all = tuple(dict.fromkeys([*(s for s in SETTINGS if (root / s).is_dir()), *settings]))
    return build_tables(out, settings_all, sorted({*seeds, *seeds_in(root)}))

#: The bars the recommended score is held to on the committed test sets (mean over seeds): at least the best
#: baseline on every set; on MNIST and F-MNIST an AUROC of at least FLOOR_AUROC and an FPR95 of at most
#: CEILING_FPR95; on the held-out classes of the 0-4 splits at least the paper's own number.
FLOOR_AUROC, CEILING_FPR95 = 99.0, 5.0
FULL_SETTINGS = ("mnist", "fmnist")


def _write_recommended_checks(folder: Path, tables: dict) -> dict:
    """``recommended.{md,json}``: per setting and OOD set, the recommended score ("Ours") against the best
    baseline (every method that is not one of our rules) and the bars above, each marked met or not."""
    cells: dict[str, dict] = {}
    for table in ("table1", "table2", "extra"):
        for setting, sdoc in tables.get(table, {}).get("settings", {}).items():
            for name, metrics in sdoc["rows"].items():
                for metric in ("auroc", "fpr95"):
                    for m, c in metrics.get(metric, {}).items():
                        if c.get("mean") is not None:
                            cells.setdefault(setting, {}).setdefault(name, {}).setdefault(metric, {})[m] = c
                        if m == "oodgen" and metric == "auroc":
                            cells.setdefault(setting, {}).setdefault(name, {}).setdefault("paper", c.get("paper"))
    doc = {"title": f"The recommended score ({RECOMMENDED}) against the best baseline and the bars", "rows": [],
           "floor_auroc": FLOOR_AUROC, "ceiling_fpr95": CEILING_FPR95, "baselines": "every method not in OURS"}
    lines = [f"# {doc['title']}", "", f"Mean over seeds. Bars: AUROC >= the best baseline's on every set; on MNIST and "
             f"F-MNIST AUROC >= {FLOOR_AUROC:g} and FPR95 <= {CEILING_FPR95:g} %; on the held-out classes of the 0-4 "
             "splits AUROC >= the paper's. n = seeds.", "",
             "| setting | OOD set | recommended AUROC (n) | best baseline (n) | margin | FPR95 | bars met |",
             "|---|---|---|---|---|---|---|"]
    for setting, by_set in cells.items():
        for name, c in by_set.items():
            ours, fpr = c.get("auroc", {}).get("oodgen"), c.get("fpr95", {}).get("oodgen")
            base = {m: v for m, v in c.get("auroc", {}).items() if m not in OURS}
            if ours is None or not base:
                continue
            best = max(base, key=lambda m: base[m]["mean"])
            checks = {"beats_best_baseline": ours["mean"] >= base[best]["mean"]}
            if setting in FULL_SETTINGS:
                checks.update(auroc_floor=ours["mean"] >= FLOOR_AUROC, fpr95_ceiling=fpr["mean"] <= CEILING_FPR95)
            elif name.endswith("5-9") and c.get("paper") is not None:
                checks["paper_held_out"] = ours["mean"] >= c["paper"]
            row = {"setting": setting, "ood_set": name, "auroc": ours["mean"], "n": ours["n"], "fpr95": fpr["mean"],
                   "best_baseline": best, "best_auroc": base[best]["mean"], "best_n": base[best]["n"],
                   "checks": checks}
            doc["rows"].append(row)
            failed = [k for k, ok in checks.items() if not ok]
            lines.append(f"| {setting} | {name} | {ours['mean']:.2f} ({ours['n']}) | {display(best)} "
                         f"{base[best]['mean']:.2f} ({base[best]['n']}) | {ours['mean'] - base[best]['mean']:+.2f} | "
                         f"{fpr['mean']:.2f} | {'yes' if not failed else 'no: ' + ', '.join(failed)} |")
    # no row (no run records the recommended score yet) is not a pass
    doc["all_met"] = bool(doc["rows"]) and all(all(r["checks"].values()) for r in doc["rows"])
    if not doc["rows"]:
        lines.append(f"| – | – | no run records `{RECOMMENDED}` yet | | | | no |")
    lines += ["", f"All bars met: {'yes' if doc['all_met'] else 'no'}.", ""]
    atomic_write_bytes(folder / "recommended.md", "\n".join(lines).encode())
    atomic_write_json(folder / "recommended.json", doc)
    return doc


def _write_deviations(folder: Path, tables: dict, limit: float = 5.0) -> dict:
    """Every AUROC cell more than ``limit`` points from the paper's value, for the README to explain."""
    rows = []
    for table in ("table1", "table2"):
        for setting, sdoc in tables[table]["settings"].items():
            for name, metrics in sdoc["rows"].items():
                for m, c in metrics.get("auroc", {}).items():
                    if c.get("mean") is not None and c.get("paper") is not None and abs(c["mean"] - c["paper"]) > limit:
                        rows.append({"table": table, "setting": setting, "ood": name, "method": m,
                                     "ours": c["mean"], "paper": c["paper"], "diff": c["mean"] - c["paper"], "n": c["n"]})
    lines = [f"# AUROC cells more than {limit:g} points from the paper", "",
             "Generated by `oodgen bench`; README section \"Baselines and the benchmark\" explains the causes.", "",
             "| table | setting | OOD set | method | ours | paper | ours - paper | n |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['table']} | {r['setting']} | {r['ood']} | {display(r['method'])} | {r['ours']:.1f} "
              f"| {r['paper']} | {r['diff']:+.1f} | {r['n']} |" for r in rows]
    doc = {"limit": limit, "metric": "auroc", "cells": rows}
    atomic_write_bytes(folder / "deviations.md", ("\n".join(lines) + "\n").encode())
    atomic_write_json(folder / "deviations.json", doc)
    return doc


def _mean_std(cell: dict, digits: int) -> str:
    text = f"{cell['mean']:.{digits}f}"
    return text + (f" ± {cell['std']:.{digits}f}" if cell["std"] is not None else "")


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "–"
    ours = "–" if cell["mean"] is None else _mean_std(cell, 1)
    return ours + (f" ({cell['paper']})" if cell.get("paper") is not None else "")


def _report_links(folder: Path, setting: str, seeds) -> list[str]:
    """Links from a table to the per-run reports (`oodgen report DIR`) that exist for a setting."""
    links = [f"[seed {s}](../{job_key(setting, 'oodgen', s)}/report.md)" for s in seeds
             if (job_dir(folder.parent, setting, "oodgen", s) / "report.md").exists()]
    return [f"Reports of our runs (ROC curves, score histograms, samples): {', '.join(links)}", ""] if links else []


def ours_heads(runs: list[dict]) -> dict[str, list[int]]:
    """The seeds of Ours' runs per n+1 classifier head (``--head``; runs written before the option: linear)."""
    heads: dict[str, list[int]] = {}
    for r in runs:
        heads.setdefault((r.get("variant") or {}).get("head", "linear"), []).append(r["seed"])
    return heads


def _heads_line(heads: dict[str, list[int]]) -> list[str]:
    if not heads:
        return []
    return ["Ours' n+1 classifier: " + "; ".join(f"{h} head (seed{'s' if len(v) > 1 else ''} "
                                               f"{', '.join(map(str, sorted(v)))})" for h, v in sorted(heads.items()))
            + (" (the default is the cosine head since selection round 6; these runs are from before it)"
               if set(heads) == {"linear"} else ""), ""]


def _write_table(folder: Path, table: str, doc: dict, paper: dict) -> None:
    methods = doc["methods"]
    names = {**paper["ood_names"], "kmnist": "KMNIST"}
    lines = [f"# {doc['title']}", "",
             f"Cells: ours mean ± std over those of seeds {doc['seeds']} that have results (a cell without "
             "± has one seed; the CSV/JSON give n per cell), the paper's value in brackets, percent; "
             "– = not run.", ""]
    rows_csv = []
    for setting, sdoc in doc["settings"].items():
        acc = sdoc["accuracy"]
        acc_txt = "; ".join(f"{display(m)} {_mean_std(a, 2)}" for m, a in acc.items() if a["n"])
        lines += [f"## {paper['setting_names'].get(setting, setting)}", "", f"Test accuracy: {acc_txt}"
                  + (f" (paper: plain {sdoc['paper_accuracy']['plain']}, ours {sdoc['paper_accuracy']['oodgen']})"
                     if sdoc.get("paper_accuracy") else ""), "",
                  *_heads_line(sdoc.get("ours_heads") or {}),
                  *_report_links(folder, setting, doc["seeds"]),
                  "| OOD set | metric | " + " | ".join(display(m) for m in methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for name, metrics in sdoc["rows"].items():
            for metric, cells in metrics.items():
                lines.append(f"| {names.get(name, name)} | {METRIC_LABELS[metric]} | "
                             + " | ".join(_fmt(cells.get(m)) for m in methods) + " |")
                for m in methods:
                    c = cells.get(m)
                    if c:
                        rows_csv.append([setting, name, metric, m, c["mean"], c["std"], c["n"], c["paper"]])
        lines.append("")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / f"{table}.md", "\n".join(lines).encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["setting", "ood", "metric", "method", "mean", "std", "n_seeds", "paper"])
    for r in rows_csv:
        w.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in r])
    atomic_write_bytes(folder / f"{table}.csv", buf.getvalue().encode())
    atomic_write_json(folder / f"{table}.json", doc)
