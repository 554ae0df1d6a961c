"""Type I generation at several image shapes (28x28x1, 32x32x3, 64x64x3): samples/s of oodgen's
layer-wise Jacobian + QR projection, and its ratio to the bound of d + 1 decoder forward passes
per sample (measured as the decoder's own forward throughput on the same batch), one process.
The batch is oodgen's own per-shape choice (``type1_batch``) unless ``--batch N`` fixes one.

    python benchmarks/bench_generation_shapes.py [--batch auto|N] [--out benchmarks/results/generation_shapes.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from oodgen._runtime import tune_allocator  # noqa: E402
from oodgen.generate import off_manifold_samples  # noqa: E402
from oodgen.generate.off_manifold import type1_batch  # noqa: E402
from oodgen.models import CVAE  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402

SHAPES = ((1, 28, 28), (3, 32, 32), (3, 64, 64))
GOAL = 1.2


def best(fn, repeats: int = 3) -> float:
    fn()
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="samples per shape")
    ap.add_argument("--batch", default="auto", help="Type I batch: auto (oodgen's type1_batch per shape) or N")
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation_shapes.json"))
    a = ap.parse_args()
    allocator = tune_allocator()
    rows = []
    for shape in SHAPES:
        batch = type1_batch(shape) if a.batch == "auto" else int(a.batch)
        torch.manual_seed(0)
        cvae = CVAE(10, a.latent, in_channels=shape[0], image_size=shape[1:]).eval()
        x, y = torch.rand(a.n, *shape), torch.randint(0, 10, (a.n,))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            mu, _ = cvae.encode(x, y)
            oh = cvae.onehot(y)
            t_fwd = best(lambda: [cvae.decoder(mu[i:i + batch], oh[i:i + batch]) for i in range(0, a.n, batch)])
            t_ours = best(lambda: off_manifold_samples(cvae, x, y, generator=gen, batch_size=batch,
                                                       beta="wide", clip="half"))
        bound = t_fwd * (a.latent + 1)
        rows.append({"shape": list(shape), "D": int(torch.tensor(shape).prod()), "batch": batch,
                     "samples_per_s": a.n / t_ours, "bound_samples_per_s": a.n / bound,
                     "ratio_to_bound": t_ours / bound, "meets_goal": t_ours / bound <= GOAL})
        print(f"{shape} batch {batch}: {a.n / t_ours:8.0f} samples/s, bound {a.n / bound:8.0f}, ratio {t_ours / bound:.2f}", flush=True)
    out = {"rows": rows, "n": a.n, "batch": a.batch, "latent_dim": a.latent, "goal_ratio": GOAL,
           "allocator_tuned": allocator, "environment": environment(),
           "command": "python benchmarks/bench_generation_shapes.py " + " ".join(sys.argv[1:])}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
