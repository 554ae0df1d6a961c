"""`oodgen bench --executor ray`: a local Ray instance (2 CPUs) runs a smoke grid of 2 settings x
2 methods x 1 seed and writes the same metrics as the serial bench; a failing job is reported
while the others finish."""
from __future__ import annotations

import json
import shutil


import ray  # noqa: F401  (in the test extras: a missing Ray is a failure here, not a skip)
from oodgen.bench import BenchOptions, bench, bench_ray

SETTINGS, METHODS = ("mnist", "fmnist"), ("msp", "energy")


def _aurocs(out, setting, method):
    m = json.loads((out / setting / method / "seed0" / "metrics.json").read_text())
    return {k: v["auroc"] for k, v in m["ood"].items()}


def test_ray_grid_matches_serial_and_reports_failures(tmp_path):
    grid = tmp_path / "ray"
    # a third setting whose run directory holds another seed's run: its jobs must fail, alone
    bad = grid / "mnist0-4" / "oodgen" / "seed0"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"id": "mnist0-4", "seed": 7, "profile": "smoke"}))
    opts = BenchOptions(profile="smoke", out=grid, num_cpus=2, log=lambda *_: None)
    rep = bench_ray((*SETTINGS, "mnist0-4"), METHODS, [0], opts)
    assert sorted(rep.failed) == ["mnist0-4/energy/seed0", "mnist0-4/msp/seed0", "mnist0-4/oodgen/seed0"]
    assert all("seed=7" in v for v in rep.failed.values())
    assert sorted(rep.ran) == sorted([f"{s}/{m}/seed0" for s in SETTINGS for m in METHODS]
                                     + [f"{s}/oodgen/seed0" for s in SETTINGS])
    serial = tmp_path / "serial"
    for s in SETTINGS:        # the same trained runs (Ray trained them): the serial bench scores them
        shutil.copytree(grid / s / "oodgen", serial / s / "oodgen")
    bench(SETTINGS, METHODS, [0], BenchOptions(profile="smoke", out=serial, log=lambda *_: None))
    for s in SETTINGS:
        for m in METHODS:
            a, b = _aurocs(serial, s, m), _aurocs(grid, s, m)
            assert a.keys() == b.keys()
            assert all(abs(a[k] - b[k]) < 1e-6 for k in a), (s, m)
    # resume: everything finished is skipped, nothing runs again
    again = bench_ray(SETTINGS, METHODS, [0], opts)
    assert not again.failed and not again.ran


def test_an_unreachable_cluster_address_fails_at_once(tmp_path):
    """--address of a head that accepts no connection: a clear error within seconds (ray.init itself
    retries for minutes), before any job; other address forms are left to Ray."""
    import socket
    import time

    import pytest
    from oodgen.bench.executors import ExecutorError, check_reachable

    with socket.socket() as s:          # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        bench_ray(["mnist"], ["msp"], [0], BenchOptions(profile="smoke", out=str(tmp_path),
                                                         address=f"127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 30
    assert not any(tmp_path.iterdir())
    with pytest.raises(ExecutorError, match="ray://127.0.0.1"):
        check_reachable(f"ray://127.0.0.1:{port}")
    check_reachable("auto")             # not host:port: Ray resolves it
    with socket.socket() as srv:        # a listening port passes
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        check_reachable(f"127.0.0.1:{srv.getsockname()[1]}")
