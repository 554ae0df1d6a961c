"""Cross-generator panel: each run's detector against the generated panels of *other* runs' CVAEs.

A run's own generated panel (``metrics.json["generated_panel"]``, :mod:`oodgen.generate.panel`)
is made by the same CVAE whose outliers trained its classifier, so it saturates near 100 and
cannot tell two recipes apart.  Here every detector (``load_detector(run, rule)``) scores the
validation split of its setting against the panel of every run given (``checkpoints/panel.pt``,
written by ``oodgen run``), its own and the others'.  The others' panels are outliers from a
generator the classifier never saw - a held-out-generator check that uses no test OOD set, so it
may be used to choose between recipes.

    python -m experiments.cross_panel --runs A B [C ...] --out results/ablation/cross_panel.json

Every run must be of the same setting (same validation split).  The JSON holds, per detector run
and rule, the AUROC (%) on each panel component of each generator run, its own mean and the mean
over the other runs' panels.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from oodgen.config import RunConfig
from oodgen.metrics import ood_metrics
from oodgen.run import load_setting
from oodgen.score import load_detector
from oodgen.utils import atomic_write_json, environment

RULES = ("ood-class", "max-in", "reject+knn", "reject+fisher")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="finished run folders (checkpoints/panel.pt and detector.pt)")
    ap.add_argument("--names", nargs="+", help="a short name per run (default: the folder names)")
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = [Path(r) for r in args.runs]
    names = args.names or [r.name for r in runs]
    if len(names) != len(runs):
        ap.error("--names needs one name per run")
    cfgs = [RunConfig.from_dict(json.loads((r / "config.json").read_text())) for r in runs]
    if len({(c.id, c.profile) for c in cfgs}) != 1:
        ap.error("the runs must share one setting and profile (the same validation split)")
    panels = {}
    for name, run in zip(names, runs):
        path = run / "checkpoints" / "panel.pt"
        if not path.is_file():
            ap.error(f"{path} is missing: run `oodgen run` on that folder once to write it")
        panels[name] = torch.load(path, map_location="cpu", weights_only=True)["images"]
    xv = load_setting(cfgs[0]).x_val
    rows: dict = {}
    for name, run, cfg in zip(names, runs, cfgs):
        rows[name] = {"variant": cfg.to_dict()["variant"], "rules": {}}
        for rule in args.rules:
            det = load_detector(run, rule)
            s_val = det.score(xv)
            table = {}
            for gen, comps in panels.items():
                table[gen] = {c: ood_metrics(s_val, det.score(imgs))["auroc"] for c, imgs in comps.items()}
            own = float(np.mean(list(table[name].values())))
            others = [v for g, t in table.items() if g != name for v in t.values()]
            rows[name]["rules"][rule] = {"auroc": table, "own_mean": own,
                                         "others_mean": float(np.mean(others)) if others else None}
            print(f"{name:>12} {rule:>14}: own panel {own:6.2f}, other generators "
                  f"{rows[name]['rules'][rule]['others_mean'] or float('nan'):6.2f}", flush=True)
    atomic_write_json(args.out, {
        "command": "python -m experiments.cross_panel " + " ".join(sys.argv[1:]),
        "setting": cfgs[0].id, "profile": cfgs[0].profile, "seeds": [c.seed for c in cfgs],
        "runs": dict(zip(names, map(str, runs))), "n_val": len(xv), "detectors": rows,
        "note": "validation split vs generated panels only (no test OOD set); 'others_mean' is the "
                "held-out-generator criterion", "environment": environment()})


if __name__ == "__main__":
    main()
