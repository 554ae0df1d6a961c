"""Nearest-neighbour search for the feature bank of a trained run: torch matrix products vs
faiss-cpu (flat, IVF, HNSW; skipped if faiss is not installed) vs smaller banks, on the same
queries in one process.  Queries: 4,096 in-distribution test images and 4,096 images of one
other set; per method its time per 4,096 queries, its largest distance error against the exact
k = 50 search of the full bank, and (for orientation only: nothing is chosen here) the AUROC of
the distance between the two query sets.

    python benchmarks/bench_knn.py [--run results/fmnist/oodgen/seed0] [--other mnist] \
        [--out benchmarks/results/knn.json]
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
from oodgen.config import RunConfig  # noqa: E402
from oodgen.data import datasets as D  # noqa: E402
from oodgen.detectors.knn import KNN, kth_largest  # noqa: E402
from oodgen.detectors.posthoc import model_outputs  # noqa: E402
from oodgen.metrics import ood_metrics  # noqa: E402
from oodgen.score import load_detector  # noqa: E402
from oodgen.utils import atomic_write_json, environment  # noqa: E402

K = 50


def unit(f: np.ndarray) -> np.ndarray:
    return (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def best_time(fn, repeats: int = 3):
    fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="results/fmnist/oodgen/seed0")
    ap.add_argument("--other", default="mnist")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "knn.json"))
    a = ap.parse_args()
    tune_allocator()
    run = Path(a.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    clf = load_detector(run, "ood-class").inference_classifier()
    train = D.load(cfg.id, "train").images[:55000]
    feats = lambda im: model_outputs(clf, torch.from_numpy(im), ("features",))["features"]  # noqa: E731
    bank = feats(train)
    q_in, q_out = feats(D.load(cfg.id, "test").images[:a.n]), feats(D.load(a.other, "test").images[:a.n])
    q = np.concatenate([q_in, q_out])
    ub, uq = unit(bank), unit(q)

    rows = []

    def record(name, fn, exact=None):
        d, secs = best_time(fn)
        d = np.asarray(d, dtype=np.float64)
        rows.append({"method": name, "ms_per_4096": 1000 * secs * 4096 / len(q),
                     "max_abs_error": None if exact is None else float(np.abs(d - exact).max()),
                     "auroc_in_vs_other": ood_metrics(d[:a.n], d[a.n:])["auroc"]})
        print(f"{name:45s} {rows[-1]['ms_per_4096']:8.1f} ms/4096  err {rows[-1]['max_abs_error']}", flush=True)
        return d

    def torch_exact():
        b, out = torch.from_numpy(ub), np.empty(len(uq))
        for i in range(0, len(uq), 1000):
            sim = torch.from_numpy(uq[i:i + 1000]) @ b.T
            out[i:i + 1000] = torch.sqrt((2 - 2 * sim.topk(K, dim=1).values[:, -1].double()).clamp_min(0)).numpy()
        return out

    exact = torch_exact()
    record(f"torch matmul + topk, full bank {len(bank)}, k={K}", torch_exact, exact)
    knn = KNN(None, k=K).fit_outputs(features=bank)
    record("oodgen KNN (skips all-zero bank columns), full bank", lambda: knn.score_outputs(features=q), exact)
    rng = np.random.default_rng(0)
    for frac in (0.2, 0.1):
        m = int(round(frac * len(bank)))
        sub = KNN(None, k=max(1, round(K * frac))).fit_outputs(features=bank[np.sort(rng.permutation(len(bank))[:m])])
        record(f"oodgen KNN, bank {m} (fraction {frac}), k={sub.k}", lambda s=sub: s.score_outputs(features=q), exact)
    # The selection alone (the k-th largest similarity per query), on the real similarity chunks of
    # 1,000 queries: torch.topk on the whole row vs oodgen's block selection (exact; block size
    # None = its default rule).  The product itself is timed once for scale.
    for frac in (1.0, 0.2):
        m = int(round(frac * len(bank)))
        k = max(1, round(K * frac))
        b = torch.from_numpy(ub if frac == 1.0 else ub[np.sort(rng.permutation(len(bank))[:m])])
        chunks = [torch.from_numpy(uq[i:i + 1000]) @ b.T for i in range(0, len(uq), 1000)]
        ref = torch.cat([c.topk(k, dim=1).values[:, -1] for c in chunks])
        per = 1000 * 4096 / len(q)
        _, secs = best_time(lambda: [torch.from_numpy(uq[i:i + 1000]) @ b.T for i in range(0, len(uq), 1000)])
        rows.append({"method": f"selection: the product alone, bank {m}", "ms_per_4096": per * secs})
        for name, fn in [("torch.topk", lambda c: c.topk(k, dim=1).values[:, -1])] + [
                (f"kth_largest block={blk}", lambda c, blk=blk: kth_largest(c, k, blk)) for blk in (None, 5, 10, 20, 40)]:
            got, secs = best_time(lambda fn=fn: torch.cat([fn(c) for c in chunks]))
            rows.append({"method": f"selection: {name}, bank {m}, k={k}", "ms_per_4096": per * secs,
                         "exact": bool(torch.equal(got, ref))})
            print(f"{rows[-1]['method']:45s} {rows[-1]['ms_per_4096']:8.1f} ms/4096  exact {rows[-1]['exact']}",
                  flush=True)
    try:
        import faiss
    except ImportError:
        faiss = None
        rows.append({"method": "faiss", "skipped": "faiss-cpu not installed (pip install faiss-cpu)"})
    if faiss is not None:
        faiss.omp_set_num_threads(torch.get_num_threads())

        def search(index):
            dist, _ = index.search(uq, K)
            return np.sqrt(np.clip(2 - 2 * dist[:, -1].astype(np.float64), 0, None))

        flat = faiss.IndexFlatIP(ub.shape[1])
        flat.add(ub)
        record("faiss IndexFlatIP (exact), full bank", lambda: search(flat), exact)
        for nlist, nprobe in ((256, 8), (256, 16), (64, 8)):
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(ub.shape[1]), ub.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(ub)
            ivf.add(ub)
            ivf.nprobe = nprobe
            record(f"faiss IVFFlat nlist={nlist} nprobe={nprobe}", lambda i=ivf: search(i), exact)
        hnsw = faiss.IndexHNSWFlat(ub.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(ub)
        hnsw.hnsw.efSearch = 128
        record("faiss HNSW M=32 efSearch=128", lambda: search(hnsw), exact)
    out = {"run": str(run), "other": a.other, "n_queries": len(q), "bank": list(bank.shape), "rows": rows,
           "faiss_version": getattr(faiss, "__version__", None) if faiss is not None else None,
           "environment": environment(), "command": "python benchmarks/bench_knn.py " + " ".join(sys.argv[1:])}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
