"""Probe the trained runs with OOD sets that played no part in choosing any score rule.

The score rules beyond the paper (``ood-class+knn``, ``reject+knn``, ``reject+fisher``) were chosen
after looking at the test OOD sets of the seed-0 runs.  These four sets were defined after the
rules were fixed and are built from the in-distribution test images themselves, so they need no
data beyond the setting's own:

* ``inverted``: 1 - x (white background);
* ``vflip``: flipped upside down (some classes are nearly symmetric: MNIST 0, 1, 8; F-MNIST
  bags, trousers, so no score can reach 100 here);
* ``rot90``: rotated by 90 degrees (the same caveat);
* ``permuted``: the pixels permuted by one fixed random permutation (seed 0): the same pixel
  histogram as the data, no spatial structure.

Each run is scored by every rule it stores (``oodgen.score.load_detector(run, rule)``) and by two
baselines on the run's plain n-class classifier (max-softmax and KNN, as in ``oodgen bench``).

    python scripts/probe_unseen.py --id mnist fmnist --seeds 0 1 2

writes ``results/probe/<id>/seed<k>.json`` (metrics, definitions, versions, machine) and
``results/probe/summary.md`` (AUROC and FPR95, mean ± std over the seeds found).  Needs the runs'
local checkpoints (``results/<id>/oodgen/seed<k>/detector.pt`` and ``checkpoints/plain.pt``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oodgen.config import RunConfig  # noqa: E402
from oodgen.detectors.knn import KNN  # noqa: E402
from oodgen.detectors.msp import MaxSoftmax  # noqa: E402
from oodgen.detectors.oodgen import SCORES  # noqa: E402
from oodgen.metrics import ood_metrics  # noqa: E402
from oodgen.models import Fig6cCNN  # noqa: E402
from oodgen.run import load_setting  # noqa: E402
from oodgen.score import load_detector  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402

SETS = ("inverted", "vflip", "rot90", "permuted")
BASELINES = ("msp", "knn")


def probe_sets(x: torch.Tensor) -> dict[str, torch.Tensor]:
    perm = torch.from_numpy(np.random.default_rng(0).permutation(x[0].numel()))
    return {"inverted": 1.0 - x,
            "vflip": torch.flip(x, dims=(2,)),
            "rot90": torch.rot90(x, 1, dims=(2, 3)),
            "permuted": x.reshape(len(x), -1)[:, perm].reshape(x.shape)}


def probe_run(run_dir: Path) -> dict:
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    x, y, _xv, _yv, xt, _yt, _r = load_setting(cfg)
    sets = probe_sets(xt)
    out: dict[str, dict] = {name: {} for name in sets}
    for rule in SCORES:
        det = load_detector(run_dir, rule)
        s_in = det.score(xt)
        for name, xo in sets.items():
            out[name][rule] = ood_metrics(s_in, det.score(xo))
    plain = Fig6cCNN(int(y.max()) + 1)
    plain.load_state_dict(torch.load(run_dir / "checkpoints" / "plain.pt", map_location="cpu",
                                     weights_only=False)["model"])
    plain.eval()
    for name, det in (("msp", MaxSoftmax(plain)), ("knn", KNN(plain, k=50))):
        det.fit(x, y)
        s_in = det.score(xt)
        for set_name, xo in sets.items():
            out[set_name][name] = ood_metrics(s_in, det.score(xo))
    return {"id": cfg.id, "seed": cfg.seed, "run_dir": str(run_dir),
            "n_in": len(xt), "sets": out, "definition": __doc__.split("\n\n")[1:3], "command": " ".join(["python", "scripts/probe_unseen.py", *sys.argv[1:]]),
            "environment": environment(),
            "metrics_note": "percent; in-distribution positive; scores higher = more OOD"}


def summary(results: list[dict]) -> str:
    lines = ["# Probe with OOD sets that played no part in choosing a score rule",
             "", "Produced by `python scripts/probe_unseen.py` (its docstring defines the sets). "
             "Cells: AUROC (FPR95) in percent, mean ± std over the seeds; `msp` and `knn` score the run's "
             "plain n-class classifier.", ""]
    columns = list(SCORES) + list(BASELINES)
    for setting in dict.fromkeys(r["id"] for r in results):
        runs = [r for r in results if r["id"] == setting]
        lines += [f"## {setting} (seeds {[r['seed'] for r in runs]})", "",
                  "| set | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---|" + "---|" * len(columns)]
        for name in SETS:
            cells = []
            for c in columns:
                au = np.array([r["sets"][name][c]["auroc"] for r in runs])
                fp = np.array([r["sets"][name][c]["fpr95"] for r in runs])
                sd = f" ± {au.std(ddof=1):.1f}" if len(runs) > 1 else ""
                cells.append(f"{au.mean():.1f}{sd} ({fp.mean():.1f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--id", nargs="+", default=["mnist", "fmnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--results", default=str(ROOT / "results"))
    args = ap.parse_args(argv)
    res = Path(args.results)
    for setting in args.id:
        for seed in args.seeds:
            run_dir = res / setting / "oodgen" / f"seed{seed}"
            dest = res / "probe" / setting / f"seed{seed}.json"
            if not (run_dir / "detector.pt").exists() or not (run_dir / "checkpoints" / "plain.pt").exists():
                print(f"skip {run_dir}: no local detector.pt or plain.pt")
                continue
            print(f"probing {run_dir}", flush=True)
            atomic_write_json(dest, probe_run(run_dir))
    found = [json.loads(p.read_text()) for p in sorted((res / "probe").glob("*/seed*.json"))]
    if found:
        (res / "probe" / "summary.md").write_text(summary(found) + "\n")
        print(summary(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
