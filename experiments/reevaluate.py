"""Score finished runs again with the current code (every rule, the new ones included), from their checkpoints.

A run directory whose training stages all finished (``checkpoints/`` beside its ``config.json``) is read
with its own configuration and evaluated again; nothing is trained.  ``metrics.json`` keeps the training
run's timings and records when, and at which git revision, it was re-scored (``reevaluated``).  A
directory without its checkpoints is refused before anything runs: it would train from scratch.

    python -m experiments.reevaluate results/quick/fmnist-ours-seed0 results/quick/mnist-authors-seed0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oodgen.config import RunConfig
from oodgen.run import run

NEEDED = ("cvae.pt", "nplus1.pt")


def reevaluate(folder, data_dir=None, log=print) -> dict:
    folder = Path(folder)
    missing = [n for n in NEEDED if not (folder / "checkpoints" / n).is_file()]
    if not (folder / "config.json").is_file() or missing:
        raise SystemExit(f"{folder}: not a finished run with its checkpoints (missing: "
                         f"{', '.join(['config.json'] if not (folder / 'config.json').is_file() else missing)}); "
                         "re-evaluating it would train it again")
    cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    metrics = run(cfg, folder, data_dir=data_dir, progress=False, log=log)
    if not metrics.get("reevaluated"):
        raise SystemExit(f"{folder}: a stage was trained, not restored (the checkpoints were not final)")
    return metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories with config.json and checkpoints/")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    for folder in a.runs:
        m = reevaluate(folder, a.data_dir, log=lambda *_: None)
        print(f"{folder}: re-scored at {m['reevaluated']['git_revision']} in {m['reevaluated']['evaluation_s']:.0f} s; "
              f"primary {m['score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
