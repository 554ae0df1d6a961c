"""VOS's training cost and scoring speed beside ours, side by side in one process (CPU).

Training: seconds per step at batch 128 (10 classes, the Fig. 6c CNN, random 28x28 images), every
kind of step timed in the same round-robin rounds:

* ``plain``: the plain classifier's step (cross-entropy), what VOS does before its queues are used;
* ``vos warm-up``: VOS's step before regularising (cross-entropy + feature queues);
* ``vos regularised``: VOS's step with full queues of 1,000 per class (class Gaussians, virtual
  outliers, uncertainty loss), :meth:`oodgen.detectors.vos.VOSNetwork.step_loss`;
* ``ours n+1``: our classifier's step on 128 in-distribution + 64 Type I + 64 Type II images (the
  outliers taken from a pool; generating them and training the CVAE are extra, and are read from the
  committed runs' ``timings_s`` by ``--runs``).

Scoring: images/s at batch 256 of our p(n+1) (one pass of the n+1 classifier) and of VOS's energy
(one pass of its classifier through :meth:`VOS.score`).

    python benchmarks/bench_vos.py [--rounds 20] [--n 4096] [--runs results] [--out benchmarks/results/vos.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from oodgen._runtime import tune_allocator
from oodgen.detectors.oodgen import nplus1_scores
from oodgen.detectors.vos import VOS, VOSNetwork
from oodgen.models import Fig6cCNN
from oodgen.utils import atomic_write_json, environment

BATCH, N_CLASSES, QUEUE = 128, 10, 1000


def training_steps(rounds: int) -> dict[str, float]:
    """Median seconds per training step of each kind, timed in interleaved rounds."""
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28)
    y = torch.arange(BATCH) % N_CLASSES
    outliers = torch.rand(128, 1, 28, 28)
    rng = torch.Generator().manual_seed(0)

    def vos_net(full: bool) -> VOSNetwork:
        net = VOSNetwork(Fig6cCNN(N_CLASSES), N_CLASSES, 128, QUEUE, torch.Generator().manual_seed(0)).train()
        if full:
            net.enqueue(torch.rand(N_CLASSES * QUEUE, 128), torch.arange(N_CLASSES).repeat_interleave(QUEUE))
        return net

    plain, warm, reg, nplus1 = Fig6cCNN(N_CLASSES).train(), vos_net(False), vos_net(True), Fig6cCNN(N_CLASSES + 1).train()
    opts = {name: torch.optim.Adam(m.parameters(), 1e-3)
            for name, m in (("plain", plain), ("vos warm-up", warm), ("vos regularised", reg), ("ours n+1", nplus1))}
    y_ood = torch.cat([y, torch.full((128,), N_CLASSES)])
    w = torch.cat([torch.ones(BATCH), torch.full((128,), 0.1)])
    losses = {
        "plain": lambda: F.cross_entropy(plain(x), y),
        "vos warm-up": lambda: warm.step_loss(x, y, 0.1, 10000, 1, rng, regularise=False)[0],
        "vos regularised": lambda: reg.step_loss(x, y, 0.1, 10000, 1, rng, regularise=True)[0],
        "ours n+1": lambda: (F.cross_entropy(nplus1(torch.cat([x, outliers])), y_ood, reduction="none") * w).mean(),
    }
    times: dict[str, list[float]] = {k: [] for k in losses}
    for r in range(rounds + 2):
        for name, loss_fn in losses.items():
            t0 = time.perf_counter()
            loss = loss_fn()
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if r >= 2:                                  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def throughput(fn, x: torch.Tensor, batch: int) -> float:
    fn(x[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i:i + batch])
    return len(x) / (time.perf_counter() - t0)


def scoring(n: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.rand(n, 1, 28, 28)
    nplus1 = Fig6cCNN(N_CLASSES + 1).eval()
    # epochs=0: a fitted VOS detector without training; scoring costs the same after training
    vos = VOS(Fig6cCNN(N_CLASSES), epochs=0).fit(torch.rand(64, 1, 28, 28), torch.arange(64) % N_CLASSES)

    def ours(xb):
        with torch.no_grad():
            return nplus1_scores(nplus1(xb), "ood-class")
    rates = {}
    for _ in range(2):                                  # second round kept: both warm
        rates = {"ours p(n+1)": throughput(ours, x, batch), "vos energy": throughput(vos.score, x, batch)}
    return rates


def committed_timings(root: Path) -> dict:
    """Training seconds of the committed full-profile runs: ours (CVAE, outliers, n+1 classifier)
    and VOS (its classifier's epochs), per setting and seed, with the CPU each ran on."""
    out = {}
    for path in sorted(root.glob("*/vos/seed*/metrics.json")):
        setting, seed = path.parts[-4], path.parts[-2]
        vos = json.loads(path.read_text())
        ours_path = root / setting / "oodgen" / seed / "metrics.json"
        row = {"vos_training_s": sum(vos["hyper_parameters"]["history"]["seconds"]),
               "vos_cpu": vos["environment"]["cpu"]}
        if ours_path.exists():
            t = json.loads(ours_path.read_text())
            tim = t["timings_s"]
            row.update({"ours_training_s": sum(tim.get(k, 0.0) for k in ("cvae_training", "ellipsoid_fit", "cvae_health",
                                                                          "type1_generation", "type2_generation",
                                                                          "classifier_training")),
                        "plain_training_s": tim.get("plain_training"), "ours_cpu": t["environment"]["cpu"]})
        out[f"{setting}/{seed}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--runs", default="results", help="bench folder whose committed timings to collect")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vos.json"))
    a = ap.parse_args()
    allocator = tune_allocator()
    steps = training_steps(a.rounds)
    rates = scoring(a.n, a.batch)
    out = {
        "train_seconds_per_step": steps,
        "train_cost_vs_plain": {k: v / steps["plain"] for k, v in steps.items()},
        "scoring_images_per_s": rates,
        "scoring_ours_vs_vos": rates["ours p(n+1)"] / rates["vos energy"],
        "committed_runs": committed_timings(Path(a.runs)),
        "batch_train": BATCH, "batch_score": a.batch, "n_score": a.n, "queue_per_class": QUEUE,
        "allocator_tuned": allocator, "environment": environment(),
        "command": "python benchmarks/bench_vos.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)
    print(json.dumps({k: out[k] for k in ("train_seconds_per_step", "train_cost_vs_plain", "scoring_images_per_s",
                                          "scoring_ours_vs_vos")}, indent=2))


if __name__ == "__main__":
    main()
