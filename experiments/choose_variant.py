"""Choose the Type I option of the results recipe without looking at any test OOD set.

Candidates: the paper's Type I options (beta U[0.1, 1], clipped) and beta log-uniform on [0.1, 28]
with a random half clipped ("wide-half").  Both are trained on the same CVAE per (setting, seed)
and scored on the same panel of generated outliers made from validation images
(``generated_panel`` in each run's metrics.json; :mod:`oodgen.generate.panel`).  The criterion
is the mean AUROC of p(n+1) over the panel, averaged over settings and seeds; the test OOD sets
play no part.

    python -m experiments.choose_variant --a results/ablation/h200-leaky-nowarmup/paper \
        --b results/ablation/h200-leaky-nowarmup/wide-half --out results/ablation/variant_choice.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from oodgen.data import PAPER_SETTINGS as SETTINGS


def panel_means(root: Path, layout: str, rule: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for setting in SETTINGS:
        for seed in range(10):
            path = root / layout.format(id=setting, seed=seed) / "metrics.json"
            if not path.exists():
                continue
            m = json.loads(path.read_text())
            if "generated_panel" in m:
                out.setdefault(setting, {})[seed] = m["generated_panel"]["mean_auroc"][rule]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="results/ablation/h200-leaky-nowarmup/paper",
                    help="root of the paper-options runs (<id>/seed<k>)")
    ap.add_argument("--b", default="results/ablation/h200-leaky-nowarmup/wide-half",
                    help="root of the wide-half runs (<id>/seed<k>)")
    ap.add_argument("--rule", default="ood-class")
    ap.add_argument("--out", default="results/ablation/variant_choice.json")
    a = ap.parse_args()
    cand = {"paper": panel_means(Path(a.a), "{id}/seed{seed}", a.rule),
            "wide-half": panel_means(Path(a.b), "{id}/seed{seed}", a.rule)}
    # Only (setting, seed) pairs that both candidates have: a fair comparison.
    pairs = sorted({(s, k) for s, d in cand["paper"].items() for k in d}
                   & {(s, k) for s, d in cand["wide-half"].items() for k in d})
    if not pairs:
        raise SystemExit("no (setting, seed) has both candidates' generated_panel")
    per = {c: {f"{s}/seed{k}": cand[c][s][k] for s, k in pairs} for c in cand}
    means = {c: float(np.mean(list(per[c].values()))) for c in cand}
    choice = max(means, key=means.get)
    doc = {"criterion": f"mean AUROC of {a.rule} over the generated panel (validation images vs generated "
                        "outliers; no test OOD set), averaged over the pairs below",
           "pairs": [f"{s}/seed{k}" for s, k in pairs], "per_pair": per, "mean": means, "choice": choice,
           "candidates": {"paper": a.a, "wide-half": a.b}, "command": "python -m experiments.choose_variant"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"mean": means, "choice": choice}, indent=2))


if __name__ == "__main__":
    main()
