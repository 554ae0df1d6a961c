"""Scoring throughput (images/s, batch 256, CPU) of the n+1 classifier vs the baselines that
need more than one forward pass per image: ODIN and Mahalanobis with input pre-processing
(one forward + one backward + one forward), MC-dropout and mutual information with T passes;
max-softmax and VOS (the energy of its own classifier) take one pass, as ours.
All on the same Fig. 6c architecture, same images, one process, measured side by side.

    python benchmarks/bench_scoring.py [--n 4096] [--passes 50] [--out benchmarks/results/scoring.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from oodgen._runtime import tune_allocator  # noqa: E402
from oodgen.detectors.oodgen import nplus1_scores  # noqa: E402
from oodgen.detectors.registry import make_detector  # noqa: E402
from oodgen.models import Fig6cCNN  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402


def throughput(fn, x: torch.Tensor, batch: int) -> float:
    fn(x[:batch])                      # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i:i + batch])
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scoring.json"))
    a = ap.parse_args()
    allocator = tune_allocator()
    torch.manual_seed(0)
    x_fit = torch.rand(2000, 1, 28, 28)
    y_fit = torch.randint(0, 10, (2000,))
    x = torch.rand(a.n, 1, 28, 28)
    nplus1 = Fig6cCNN(11).eval()
    plain = Fig6cCNN(10).eval()

    def ours(xb):
        with torch.no_grad():
            return nplus1_scores(nplus1(xb), "ood-class")

    detectors = {
        "odin (T=1000, eps=0.0014)": make_detector("odin", plain, temperature=1000.0, eps=0.0014),
        "mahalanobis (eps=0.0014)": make_detector("mahalanobis", plain, eps=0.0014),
        f"mc-dropout (T={a.passes})": make_detector("mc-dropout", plain, n_passes=a.passes),
        f"mutual-info (T={a.passes})": make_detector("mutual-info", plain, n_passes=a.passes),
        "max-softmax": make_detector("msp", plain),
        # epochs=0: fitted without training; VOS scores with one pass of its classifier either way
        "vos (energy of its classifier)": make_detector("vos", plain, epochs=0),
    }
    res = {"n_oodgen": throughput(ours, x, a.batch)}
    rates = {"oodgen n+1": res["n_oodgen"]}
    for name, det in detectors.items():
        det.fit(x_fit, y_fit)
        rates[name] = throughput(det.score, x, a.batch)
    out = {
        "images_per_s": rates,
        "oodgen_speedup": {k: rates["oodgen n+1"] / v for k, v in rates.items() if k != "oodgen n+1"},
        "batch": a.batch, "n": a.n, "allocator_tuned": allocator,
        "environment": environment(),
        "command": "python benchmarks/bench_scoring.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)
    print(json.dumps(out["images_per_s"], indent=2))
    print(json.dumps(out["oodgen_speedup"], indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
