"""How far the n+1 classifier's training is from what this CPU can do, in one run on one machine.

* the ceiling: matrix products and the Fig. 6c convolutions (forward and backward) in float32 and
  bfloat16, as GFLOP/s, at the shapes training uses (a batch of 256: 128 in-distribution + 64 Type I
  + 64 Type II images);
* the training step itself (forward, backward, Adam) in images/s and the GFLOP/s that makes, and
  its share of the float32 convolution ceiling;
* where the step's time goes: torch.profiler's operators by self CPU time;
* whether bfloat16 is native here (AMX / AVX-512 BF16 in /proc/cpuinfo): without it, bfloat16
  arithmetic is emulated and slower, and autocast cannot speed training up.

    python benchmarks/bench_ceiling.py [--out benchmarks/results/ceiling.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from oodgen._runtime import tune_allocator
from oodgen.models import Fig6cCNN
from oodgen.utils import environment

BATCH = 256


def _flags() -> dict[str, bool]:
    try:
        line = next((ln for ln in open("/proc/cpuinfo", encoding="ascii", errors="replace") if ln.startswith("flags")), "")
    except OSError:
        line = ""
    have = set(line.split())
    return {f: f in have for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


def _rate(fn, flops: float, min_s: float = 1.0) -> float:
    """GFLOP/s of ``fn`` (``flops`` per call), after a warm-up, over at least ``min_s`` seconds."""
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def step_flops(n_out: int = 11) -> float:
    """Multiply-adds x 2 of one image through the Fig. 6c CNN, x 3 for forward + backward."""
    conv1 = 26 * 26 * 32 * 9 * 1
    conv2 = 24 * 24 * 64 * 32 * 9
    fc = 12 * 12 * 64 * 128 + 128 * n_out
    return 2.0 * 3.0 * (conv1 + conv2 + fc)


def ceiling() -> dict:
    out = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        out[f"matmul 1024^3 [{name}]"] = _rate(lambda: a @ b, 2 * 1024 ** 3)
        h, w = torch.randn(BATCH, 9216, dtype=dtype), torch.randn(9216, 128, dtype=dtype)
        out[f"matmul fc1 {BATCH}x9216x128 [{name}]"] = _rate(lambda: h @ w, 2 * BATCH * 9216 * 128)
        x = torch.randn(BATCH, 32, 26, 26, dtype=dtype, requires_grad=True)
        k = torch.randn(64, 32, 3, 3, dtype=dtype, requires_grad=True)
        flops = 2.0 * BATCH * 24 * 24 * 64 * 32 * 9
        out[f"conv2 forward [{name}]"] = _rate(lambda: F.conv2d(x.detach(), k.detach()), flops)

        def fwd_bwd():
            F.conv2d(x, k).sum().backward()
        out[f"conv2 forward + backward [{name}]"] = _rate(fwd_bwd, 3 * flops)
    return out


def training_step(channels_last: bool, compiled: bool = False, first_call: dict | None = None) -> float:
    """Images/s of the Fig. 6c training step; ``first_call`` (a dict) gets the first step's seconds
    (with ``compiled``: torch.compile's compilation)."""
    torch.manual_seed(0)
    m = Fig6cCNN(11)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(memory_format=fmt)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    net = torch.compile(m) if compiled else m
    x = torch.rand(BATCH, 1, 28, 28).to(memory_format=fmt)
    y = torch.randint(0, 11, (BATCH,))

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if first_call is not None:
        t0 = time.perf_counter()
        step()
        first_call["seconds"] = time.perf_counter() - t0
    return _rate(step, BATCH, min_s=3.0) * 1e9        # images/s (one "flop" per image)


def compiled_step() -> dict:
    """torch.compile (inductor, CPU) of the same step: images/s and the compilation's seconds, or why it
    could not compile here."""
    first: dict = {}
    try:
        ips = training_step(False, compiled=True, first_call=first)
    except Exception as exc:          # no C++ toolchain, an unsupported op, ...
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    return {"images_per_s": ips, "compile_s": first["seconds"]}


def profile_step(n_steps: int = 10) -> list[dict]:
    torch.manual_seed(0)
    m = Fig6cCNN(11)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 11, (BATCH,))
    for _ in range(3):
        F.cross_entropy(m(x), y).backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(n_steps):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / n_steps,
             "share": e.self_cpu_time_total / total} for e in rows[:10]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ceiling.json"))
    a = ap.parse_args()
    tune_allocator()                  # what `oodgen run` does first (oodgen._runtime)
    ceil = ceiling()
    ips = {"contiguous": training_step(False), "channels_last": training_step(True)}
    compiled = compiled_step()
    if "images_per_s" in compiled:
        ips["torch.compile"] = compiled["images_per_s"]
    per_image = step_flops()
    best_conv = ceil["conv2 forward + backward [fp32]"]
    res = {"command": "python benchmarks/bench_ceiling.py", "cpu_flags": _flags(), "batch": BATCH,
           "torch_threads": torch.get_num_threads(),
           "ceiling_gflops": ceil, "train_images_per_s": ips, "train_gflop_per_image": per_image / 1e9,
           "train_gflops": {k: v * per_image / 1e9 for k, v in ips.items()},
           "train_share_of_fp32_conv_ceiling": {k: v * per_image / 1e9 / best_conv for k, v in ips.items()},
           "bf16_over_fp32": {"matmul": ceil["matmul 1024^3 [bf16]"] / ceil["matmul 1024^3 [fp32]"],
                              "conv2 forward + backward": ceil["conv2 forward + backward [bf16]"] / best_conv},
           "torch_compile": compiled, "profile_top_ops": profile_step(), "environment": environment()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "environment"}, indent=1))


if __name__ == "__main__":
    main()
