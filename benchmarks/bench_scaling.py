"""Scaling out on this machine, side by side in one run:

* ``ddp``: ``oodgen run`` in one process vs ``oodgen run --distributed 2`` (torchrun, DDP with gloo),
  each seed of the chosen profile trained from scratch: wall time, the CVAE's health, accuracy
  and the p(n+1) AUROC per OOD set, so the two can be compared within seed noise;
* ``ray``: the smoke grid of ``oodgen bench`` (2 settings x 2 methods x 1 seed, trained from
  scratch) serially vs on a local Ray instance with 2 CPUs (``--executor ray``).

    python benchmarks/bench_scaling.py [--part ddp ray] [--profile quick] [--seeds 0 1] \
        [--out benchmarks/results/scaling.json]

Run on an otherwise idle machine; every run writes into a temporary folder that is deleted.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from oodgen.utils import atomic_write_json, environment  # noqa: E402

SETTINGS, METHODS = ("mnist", "fmnist"), ("msp", "energy")


def _oodgen(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "oodgen", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ddp_part(profile: str, seeds: list[int], setting: str) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for procs in (1, 2):
                out = Path(tmp) / f"s{seed}-p{procs}"
                args = ["run", "--id", setting, "--profile", profile, "--seed", str(seed), "--out", str(out),
                        "--no-progress"] + (["--distributed", str(procs)] if procs > 1 else [])
                wall = _oodgen(*args)
                m = json.loads((out / "metrics.json").read_text())
                h = m["cvae_health"]
                rows.append({"seed": seed, "processes": procs, "wall_s": wall,
                             "distributed": m.get("distributed"), "timings_s": m["timings_s"],
                             "accuracy": m["accuracy"], "accuracy_plain": m["accuracy_plain"],
                             "health": {k: h[k] for k in ("active_dims", "latent_dim", "recon_ratio",
                                                          "spread_ratio", "collapsed")},
                             "auroc_p_nplus1": {k: v["auroc"] for k, v in m["ood_by_score"]["ood-class"].items()}})
                print(f"ddp: seed {seed}, {procs} process(es): {wall:.0f} s, "
                      f"{h['active_dims']}/{h['latent_dim']} dims, recon {h['recon_ratio']:.2f}x, "
                      f"AUROC {rows[-1]['auroc_p_nplus1']}", flush=True)
    one = [r for r in rows if r["processes"] == 1]
    two = [r for r in rows if r["processes"] == 2]
    return {"setting": setting, "profile": profile, "seeds": seeds, "runs": rows,
            "wall_ratio_1_over_2": sum(r["wall_s"] for r in one) / sum(r["wall_s"] for r in two)}


def ray_part() -> dict:
    from oodgen.bench import BenchOptions, bench, bench_ray
    quiet = lambda *_a, **_k: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bench(SETTINGS, METHODS, [0], BenchOptions(profile="smoke", out=Path(tmp) / "serial", log=quiet))
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray_opts = BenchOptions(profile="smoke", out=Path(tmp) / "ray", num_cpus=2, log=quiet)
        rep = bench_ray(SETTINGS, METHODS, [0], ray_opts)
        ray_s = time.perf_counter() - t0
    print(f"ray: serial {serial:.0f} s, Ray (2 CPUs, incl. starting Ray) {ray_s:.0f} s", flush=True)
    return {"grid": {"settings": SETTINGS, "methods": METHODS, "seeds": [0], "profile": "smoke"},
            "serial_s": serial, "ray_s": ray_s, "ray_failed": rep.failed, "speedup": serial / ray_s,
            "note": "Ray's time includes starting the local instance (ray.init) and shutting it down"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", choices=["ddp", "ray"], default=["ddp", "ray"])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--setting", default="mnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scaling.json"))
    a = ap.parse_args()
    result = {"command": "python benchmarks/bench_scaling.py " + " ".join(sys.argv[1:]),
              "environment": environment()}
    if "ray" in a.part:
        result["ray"] = ray_part()
    if "ddp" in a.part:
        result["ddp"] = ddp_part(a.profile, a.seeds, a.setting)
    atomic_write_json(a.out, result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
