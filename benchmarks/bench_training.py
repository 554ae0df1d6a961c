"""Training-step throughput of the Fig. 6c classifier and Type I generation under different
CPU settings, each configuration in its own subprocess (allocator settings are per process),
measured in one run: glibc malloc defaults vs oodgen's tuned thresholds, channels_last memory
format, 1 vs all threads, batch sizes.

    python benchmarks/bench_training.py [--out benchmarks/results/training.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CHILD = r"""
import json, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, %(src)r)
cfg = json.loads(sys.argv[1])
if cfg["mallopt"]:
    from oodgen._runtime import tune_allocator
    assert tune_allocator()
torch.set_num_threads(cfg["threads"])
from oodgen.models import CVAE, Fig6cCNN
from oodgen.generate import off_manifold_samples
torch.manual_seed(0)
out = {}
m = Fig6cCNN(11)
fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
m = m.to(memory_format=fmt)
opt = torch.optim.Adam(m.parameters(), 1e-3)
b = cfg["batch"]
x = torch.rand(b, 1, 28, 28).to(memory_format=fmt); y = torch.randint(0, 11, (b,))
for i in range(cfg["steps"] + 3):
    if i == 3: t0 = time.perf_counter()
    loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
out["train_images_per_s"] = cfg["steps"] * b / (time.perf_counter() - t0)
cvae = CVAE(10, 8).eval()
xs = torch.rand(1024, 1, 28, 28); ys = torch.randint(0, 10, (1024,))
g = torch.Generator().manual_seed(0)
off_manifold_samples(cvae, xs[:256], ys[:256], generator=g)
t0 = time.perf_counter(); off_manifold_samples(cvae, xs, ys, generator=g)
out["type1_samples_per_s"] = 1024 / (time.perf_counter() - t0)
print(json.dumps(out))
"""

CONFIGS = [
    {"name": "baseline: malloc defaults, 2 threads, batch 256", "mallopt": False, "channels_last": False, "threads": 2, "batch": 256},
    {"name": "tuned malloc (oodgen default)", "mallopt": True, "channels_last": False, "threads": 2, "batch": 256},
    {"name": "tuned malloc + channels_last", "mallopt": True, "channels_last": True, "threads": 2, "batch": 256},
    {"name": "tuned malloc, 1 thread", "mallopt": True, "channels_last": False, "threads": 1, "batch": 256},
    {"name": "tuned malloc, batch 512", "mallopt": True, "channels_last": False, "threads": 2, "batch": 512},
]


def main() -> None:
    from oodgen.utils import atomic_write_json, environment
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.json"))
    a = ap.parse_args()
    rows = []
    for cfg in CONFIGS:
        cfg = {**cfg, "steps": a.steps}
        env = {**os.environ, "OODGEN_NO_MALLOPT": ""}
        res = subprocess.run([sys.executable, "-c", CHILD % {"src": str(ROOT / "src")}, json.dumps(cfg)],
                             capture_output=True, text=True, env=env, check=True)
        rows.append({**cfg, **json.loads(res.stdout.strip().splitlines()[-1])})
        print(rows[-1]["name"], f"{rows[-1]['train_images_per_s']:.0f} img/s train,",
              f"{rows[-1]['type1_samples_per_s']:.0f} Type I/s", flush=True)
    base = rows[0]
    for r in rows:
        r["train_speedup_vs_baseline"] = r["train_images_per_s"] / base["train_images_per_s"]
        r["type1_speedup_vs_baseline"] = r["type1_samples_per_s"] / base["type1_samples_per_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, {"configs": rows, "environment": environment(),
                              "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
