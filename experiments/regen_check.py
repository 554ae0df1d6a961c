"""The check of docs/benchmark.md ("Regenerating the pools every 4 epochs"), written before its runs:
runs of one option (``--regen-every 4``) against the committed runs of the same seeds, by the declared
criterion - accuracy (mean over seeds) within ``--acc-points``, and every rule's mean AUROC on every OOD
set within the committed runs' seed-to-seed range (max - min) or ``--floor`` points, whichever is larger.
It selects nothing: one option, pass or fail.  It also sets the runs' stage times beside each other.

    python -m experiments.regen_check --new results/ablation/regen4/fmnist-seed{0,1,2} \
        --old results/fmnist/oodgen/seed{0,1,2} --out results/ablation/regen4/check.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from oodgen.summary import results_by_score
from oodgen.utils import atomic_write_json, environment


def _load(dirs) -> list[dict]:
    return [json.loads((Path(d) / "metrics.json").read_text()) for d in dirs]


def check(new: list[dict], old: list[dict], acc_points: float = 0.3, floor: float = 0.1) -> dict:
    """Every cell of the criterion and the verdict."""
    acc_new, acc_old = float(np.mean([m["accuracy"] for m in new])), float(np.mean([m["accuracy"] for m in old]))
    cells, failed = [], []
    by_new, by_old = [results_by_score(m) for m in new], [results_by_score(m) for m in old]
    rules = [r for r in by_old[0] if all(r in b for b in by_new + by_old)]
    for rule in rules:
        for name in by_old[0][rule]:
            a_new = [b[rule][name]["auroc"] for b in by_new]
            a_old = [b[rule][name]["auroc"] for b in by_old]
            allowed = max(max(a_old) - min(a_old), floor)
            delta = float(np.mean(a_new) - np.mean(a_old))
            ok = abs(delta) <= allowed
            cells.append({"rule": rule, "ood": name, "new_mean": float(np.mean(a_new)), "old_mean": float(np.mean(a_old)),
                          "delta": delta, "allowed": allowed, "ok": ok})
            if not ok:
                failed.append(f"{rule} / {name}: {delta:+.2f} (allowed {allowed:.2f})")
    acc_ok = abs(acc_new - acc_old) <= acc_points
    if not acc_ok:
        failed.insert(0, f"accuracy: {acc_new - acc_old:+.2f} points (allowed {acc_points})")
    stages = ("cvae_training", "type1_generation", "type2_generation", "classifier_training", "plain_training",
              "evaluation", "generated_panel", "total")
    times = {"new": [{k: m["timings_s"].get(k) for k in stages} | {"cpu": m["environment"].get("cpu")} for m in new],
             "old": [{k: m["timings_s"].get(k) for k in stages} | {"cpu": m["environment"].get("cpu")} for m in old]}
    return {"passed": acc_ok and not failed, "failed": failed, "accuracy": {"new": acc_new, "old": acc_old, "ok": acc_ok},
            "n_cells": len(cells), "n_cells_failed": sum(not c["ok"] for c in cells), "cells": cells, "timings_s": times,
            "criterion": f"accuracy within {acc_points} points; every rule x OOD set mean AUROC within max(old seeds' "
                         f"range, {floor}) (docs/benchmark.md, written before the runs)"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", nargs="+", required=True, help="run folders with the option")
    ap.add_argument("--old", nargs="+", required=True, help="the committed run folders of the same seeds")
    ap.add_argument("--acc-points", type=float, default=0.3)
    ap.add_argument("--floor", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = check(_load(a.new), _load(a.old), a.acc_points, a.floor)
    res.update(new=a.new, old=a.old, command="python -m experiments.regen_check " + " ".join(
        ["--new", *a.new, "--old", *a.old, "--out", a.out]), environment=environment())
    atomic_write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("passed", "failed", "accuracy", "n_cells", "n_cells_failed")}, indent=1))


if __name__ == "__main__":
    main()
