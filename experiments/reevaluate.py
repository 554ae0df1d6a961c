"""Score finished runs again with the current code (every rule, the new ones included), from their checkpoints.

A run directory whose training stages all finished (``checkpoints/`` beside its ``config.json``) is read
with its own configuration and evaluated again; nothing is trained.  ``metrics.json`` keeps the training
run's timings and records when, and at which git revision, it was re-scored (``reevaluated``).  A
directory without a stage's checkpoint, or with one that stopped before the stage's last epoch, is
refused before anything runs: it would train.

    python -m experiments.reevaluate results/quick/fmnist-ours-seed0 results/quick/mnist-authors-seed0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oodgen.config import RunConfig
from oodgen.run import run
from oodgen.train import load_checkpoint


def unfinished(folder: Path, cfg: RunConfig) -> list[str]:
    """The stages of a run whose checkpoint is missing or short of the stage's last epoch."""
    prof = cfg.prof
    stages = {"cvae.pt": prof.cvae.epochs, "nplus1.pt": prof.classifier.epochs,
              **({"plain.pt": prof.plain.epochs} if cfg.trains_plain else {})}
    out = []
    for name, epochs in stages.items():
        path = folder / "checkpoints" / name
        done = load_checkpoint(path).get("epoch") if path.is_file() else None
        if done != epochs:
            out.append(f"{name} ({'missing' if done is None else f'epoch {done} of {epochs}'})")
    return out


def reevaluate(folder, data_dir=None, log=print) -> dict:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder}: no config.json: not a run directory")
    cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    short = unfinished(folder, cfg)
    if short:
        raise SystemExit(f"{folder}: not a finished run with its checkpoints ({', '.join(short)}); "
                         "re-evaluating it would train it")
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
