"""Type I and Type II generation speed, side by side in one run.

Type I, three ways on the same CVAE and the same images:
  * ours: layer-wise forward-mode Jacobian of the whole batch + QR projection (oodgen default);
  * torch.func: vmap(jacfwd) Jacobian + the same projection (the generic fallback);
  * naive: per sample, autograd Jacobian of one image (torch.autograd.functional.jacobian),
    full SVD null-space basis (784 x 776), random combination of its vectors;
and the bound: d + 1 decoder forward passes per sample, measured as the decoder's own forward
throughput on the same batch.  Type II: sampling + decoding, and the cost of fitting the
per-class ellipsoids on N encodings.

    python benchmarks/bench_generation.py [--n 2048] [--naive-n 64] [--out benchmarks/results/generation.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from oodgen.generate import (ClassEllipsoids, decoder_jacobian, off_manifold_samples, on_manifold_samples,  # noqa: E402
                             perturb, uniform_null_direction)
from oodgen._runtime import tune_allocator  # noqa: E402
from oodgen.models import CVAE  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def naive_type1(cvae, x, y, gen):
    out = []
    for i in range(len(x)):
        mu, _ = cvae.encode(x[i:i + 1], y[i:i + 1])
        oh = cvae.onehot(y[i:i + 1])
        jac = torch.autograd.functional.jacobian(lambda z: cvae.decoder(z, oh).reshape(-1), mu.detach()).reshape(784, -1)
        u, s, _ = torch.linalg.svd(jac, full_matrices=True)
        rank = int((s > s.max() * 1e-7).sum())
        basis = u[:, rank:]                                # (784, 784 - rank) null-space basis
        c = torch.rand(basis.shape[1], generator=gen) * 2 - 1
        v = basis @ c
        out.append(perturb(x[i:i + 1], (v / v.norm()).unsqueeze(0), "paper", gen))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048, help="images for the batched methods")
    ap.add_argument("--naive-n", type=int, default=64, help="images for the naive per-sample method")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    a = ap.parse_args()
    allocator = tune_allocator()       # as the oodgen command does; same process for every method
    torch.manual_seed(0)
    cvae = CVAE(10, a.latent).eval()
    x = torch.rand(a.n, 1, 28, 28)
    y = torch.randint(0, 10, (a.n,))
    gen = torch.Generator().manual_seed(0)
    res: dict = {"n": a.n, "naive_n": a.naive_n, "batch": a.batch, "latent_dim": a.latent,
                 "allocator_tuned": allocator}

    with torch.no_grad():
        mu, _ = cvae.encode(x, y)
        oh = cvae.onehot(y)
        t_fwd = timed(lambda: [cvae.decoder(mu[i:i + a.batch], oh[i:i + a.batch]) for i in range(0, a.n, a.batch)], 3)
        t_ours = timed(lambda: off_manifold_samples(cvae, x, y, generator=gen, batch_size=a.batch), 2)
        t_jac = timed(lambda: [cvae.decoder.jacobian(mu[i:i + a.batch], oh[i:i + a.batch]) for i in range(0, a.n, a.batch)], 2)
    n_func = min(a.n, 512)

    def func_path():
        for i in range(0, n_func, a.batch):
            j = decoder_jacobian(cvae.decoder, mu[i:i + a.batch], oh[i:i + a.batch]).detach()
            uniform_null_direction(j, gen)
    t_func = timed(func_path, 1) * a.n / n_func
    t_naive = timed(lambda: naive_type1(cvae, x[:a.naive_n], y[:a.naive_n], gen), 1) * a.n / a.naive_n

    per = lambda t: t / a.n  # noqa: E731
    bound = per(t_fwd) * (a.latent + 1)
    res["type1"] = {
        "ours_samples_per_s": 1 / per(t_ours),
        "ours_jacobian_only_samples_per_s": 1 / per(t_jac),
        "torch_func_samples_per_s": 1 / per(t_func),
        "naive_samples_per_s": 1 / per(t_naive),
        "decoder_forward_samples_per_s": 1 / per(t_fwd),
        "bound_samples_per_s": 1 / bound,
        "speedup_vs_naive": t_naive / t_ours,
        "speedup_vs_torch_func": t_func / t_ours,
        "ratio_to_bound": per(t_ours) / bound,
    }
    # Type II
    z = torch.randn(60000, a.latent)
    yz = torch.randint(0, 10, (60000,))
    t_fit = timed(lambda: ClassEllipsoids().fit(z, yz), 2)
    ell = ClassEllipsoids().fit(z, yz)
    t_t2 = timed(lambda: on_manifold_samples(cvae, ell, y, generator=gen), 2)
    res["type2"] = {"samples_per_s": a.n / t_t2, "ellipsoid_fit_s_60k": t_fit}
    res["environment"] = environment()
    res["command"] = "python benchmarks/bench_generation.py " + " ".join(sys.argv[1:])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, res)
    print(json.dumps(res["type1"], indent=2), json.dumps(res["type2"], indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    main()
