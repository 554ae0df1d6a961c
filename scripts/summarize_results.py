"""Summarise committed runs of our method: mean ± std over seeds of every metric, beside the
paper's Table 1 "Ours" numbers (from src/oodgen/paper_tables.json), for the run's primary
score and, where every run of a setting recorded them, for the ``ood-class+knn``, ``reject+knn`` and ``reject+fisher``
scores (beyond the paper).

    python scripts/summarize_results.py [--results results] [--out results/summary_oodgen.md]

Reads results/<id>/oodgen/seed*/metrics.json; writes a Markdown table and a JSON twin.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from oodgen.data import PAPER_SETTINGS

METRICS = ("fpr95", "detection_error", "auroc", "aupr_in", "aupr_out")
SHORT = {"fpr95": "FPR95 ↓", "detection_error": "Det. err ↓", "auroc": "AUROC ↑", "aupr_in": "AUPR-in ↑",
         "aupr_out": "AUPR-out ↑"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="results/summary_oodgen.md")
    a = ap.parse_args()
    root = Path(a.results)
    paper = json.loads((Path(__file__).resolve().parents[1] / "src/oodgen/paper_tables.json").read_text())
    lines, doc = [], {}
    for setting in PAPER_SETTINGS:
        runs = [json.loads(p.read_text()) for p in sorted((root / setting / "oodgen").glob("seed*/metrics.json"))]
        if not runs:
            continue
        seeds = [r["seed"] for r in runs]
        variants = {json.dumps(r["variant"], sort_keys=True) for r in runs}
        profiles = {r["profile"] for r in runs}
        acc = np.array([r["accuracy"] for r in runs])
        acc_plain = np.array([r["accuracy_plain"] for r in runs])
        pt = paper["table1"]["results"].get(setting, {})
        pacc = paper["table1"]["accuracy"].get(setting, {})
        lines.append(f"### {setting} (profile {', '.join(sorted(profiles))}; seeds {seeds}; "
                     f"score {runs[0]['score']})\n")
        lines.append(f"Variant: `{', '.join(sorted(variants))}`\n")
        pm = (lambda a: f" ± {a.std(ddof=1):.2f}") if len(acc) > 1 else (lambda a: "")
        lines.append(f"Accuracy: n+1 {acc.mean():.2f}{pm(acc)} %, plain n-class {acc_plain.mean():.2f}{pm(acc_plain)} % "
                     f"(paper: {pacc.get('oodgen')} / {pacc.get('plain')})\n")
        health = [r.get("cvae_health") for r in runs]
        if all(health):
            lines.append("CVAE health per seed: active dims " + ", ".join(f"{h['active_dims']}/{h['latent_dim']}" for h in health)
                         + "; reconstruction / class mean " + ", ".join(f"{h['recon_ratio']:.2f}" for h in health)
                         + "; Type II spread ratio " + ", ".join(f"{h.get('spread_ratio', float('nan')):.2f}" for h in health)
                         + ("; **collapsed: " + ", ".join(str(r["seed"]) for r, h in zip(runs, health) if h["collapsed"]) + "**"
                            if any(h["collapsed"] for h in health) else "; none collapsed") + "\n")
        else:
            lines.append("CVAE health: not recorded by some runs (written before the health check)\n")
        doc[setting] = {"seeds": seeds, "accuracy": acc.tolist(), "accuracy_plain": acc_plain.tolist(),
                        "score": runs[0]["score"], "ood": {}, "ood_by_score": {},
                        "cvae_health": [{k: h[k] for k in ("active_dims", "latent_dim", "recon_ratio", "collapsed")}
                                        for h in health] if all(health) else None}
        # p(n+1), the paper's score, always; the run's primary score (max-in on MNIST 0-4); the fused rules
        scores = list(dict.fromkeys(["ood-class", runs[0]["score"]]))
        scores += [r for r in ("ood-class+knn", "reject+knn", "reject+fisher")
                   if r not in scores and all(r in x.get("ood_by_score", {}) for x in runs)]
        for rule in scores:
            lines.append(f"Score `{rule}`:\n")
            lines.append("| OOD set | " + " | ".join(f"{SHORT[m]} ours (paper)" for m in METRICS) + " |")
            lines.append("|---|" + "---|" * len(METRICS))
            table = doc[setting]["ood_by_score"][rule] = {}
            for name in runs[0]["ood"]:
                cells = []
                table[name] = {}
                for m in METRICS:
                    vals = np.array([r["ood_by_score"][rule][name][m] if "ood_by_score" in r else r["ood"][name][m]
                                     for r in runs])
                    std = vals.std(ddof=1) if len(vals) > 1 else 0.0
                    p = pt.get(name, {}).get(m, {}).get("oodgen")
                    spread = f" ± {std:.1f}" if len(vals) > 1 else ""     # one seed: no spread to show
                    cells.append(f"{vals.mean():.1f}{spread} ({'—' if p is None else p})")
                    table[name][m] = {"mean": float(vals.mean()), "std": float(std), "paper": p}
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        doc[setting]["ood"] = doc[setting]["ood_by_score"][runs[0]["score"]]
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
