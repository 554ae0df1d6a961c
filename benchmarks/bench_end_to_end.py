"""End-to-end wall time and peak RSS of `oodgen run` on MNIST, broken down by stage, and AUROC
reached per minute (time-to-quality).

Runs each requested profile fresh in a subprocess (so peak RSS is that run's own) and reads the
stage timings from its metrics.json; `--include-results` also summarises runs already committed
under results/<id>/oodgen/ (the `full` profile).

    python benchmarks/bench_end_to_end.py --profiles quick [--include-results] [--out benchmarks/results/end_to_end.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def summarise(m: dict, wall: float | None = None) -> dict:
    t = m["timings_s"]
    aurocs = [v["auroc"] for v in m["ood"].values()]
    total = wall if wall is not None else t["total"]
    return {
        "profile": m["profile"], "seed": m["seed"], "id": m["id"], "variant": m["variant"],
        "wall_s": total,
        "stages_s": {
            "cvae_training": t["cvae_training"],
            "outlier_generation": t["type1_generation"] + t["type2_generation"] + t.get("ellipsoid_fit", 0),
            "classifier_training": t["classifier_training"],
            "plain_classifier_training": t["plain_training"],
            "evaluation": t["evaluation"],
        },
        "peak_rss_mb": m["peak_rss_mb"],
        "mean_auroc": float(np.mean(aurocs)),
        "min_auroc": float(np.min(aurocs)),
        "mean_auroc_per_minute": float(np.mean(aurocs)) / (total / 60),
        "accuracy": m["accuracy"],
    }


def main() -> None:
    from oodgen.utils import atomic_write_json, environment
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", nargs="*", default=["quick"])
    ap.add_argument("--id", default="mnist")
    ap.add_argument("--variant", default="--beta wide --clip-type1 half")
    ap.add_argument("--include-results", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "end_to_end.json"))
    a = ap.parse_args()
    rows = []
    for profile in a.profiles:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "oodgen.cli", "run", "--id", a.id, "--profile", profile,
                            "--out", tmp, "--no-progress", *a.variant.split()], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            rows.append(summarise(json.loads((Path(tmp) / "metrics.json").read_text()), wall))
        print(json.dumps(rows[-1]), flush=True)
    if a.include_results:
        for p in sorted((ROOT / "results" / a.id / "oodgen").glob("seed*/metrics.json")):
            rows.append({**summarise(json.loads(p.read_text())), "source": str(p.relative_to(ROOT))})
    atomic_write_json(a.out, {"runs": rows, "environment": environment(),
                              "command": "python benchmarks/bench_end_to_end.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
