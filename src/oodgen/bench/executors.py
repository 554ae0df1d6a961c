"""Run the benchmark grid on Ray: ``oodgen bench ... --executor ray [--address ADDR]``.

Each (setting, seed) run of our detector is one Ray task, and each (setting, seed, method) of the
baselines is another that takes the run's task as an argument, so Ray starts it when that run is
trained (each run is trained once, however many methods share it).  Every task declares its
resources (``--cpus-per-job``, ``--gpus-per-job``).  Results land where a serial ``oodgen bench``
writes them (``OUT/<setting>/<method>/seed<k>/metrics.json``), finished jobs are skipped (resume
is the serial bench's), and a job that fails is reported with its error while the others run on.

The default starts a local Ray instance with this machine's cores; ``--address`` joins a running
cluster (``ray start --head`` on one machine, ``ray start --address=...`` on the others; the
output folder must then be on storage every node sees).  Ray is an optional extra:
``pip install 'oodgen[ray]'``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .jobs import ensure_plain, job_dir, job_done, needs_plain, run_dir_config


class ExecutorError(RuntimeError):
    """The executor cannot run (Ray missing or unreachable)."""


@dataclass
class GridReport:
    """What a grid run did: jobs run, skipped (already finished) and failed (with their error)."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'oodgen[ray]' (or pip install ray)") from None
    return ray


def _train(setting: str, seed: int, profile: str, out: str, data_dir, device: str,
           retrain_plain: bool = False) -> str:
    """Ray task body: train and evaluate our detector for one (setting, seed) unless it is done; with
    ``retrain_plain``, also the plain classifier of a finished run whose checkpoint is gone
    (:func:`oodgen.bench_jobs.ensure_plain`), once, before the baseline tasks that score it start."""
    from .._runtime import tune_allocator
    from ..run import run
    tune_allocator()
    run_dir = job_dir(out, setting, "oodgen", seed)
    cfg = run_dir_config(run_dir, setting, seed, profile, device)
    if not job_done(out, setting, "oodgen", seed):
        run(cfg, run_dir, data_dir, progress=False, log=lambda *_: None)
    if retrain_plain:
        ensure_plain(cfg, run_dir, data_dir, progress=False, log=lambda *_: None)
    return str(run_dir)


def _method(_run_dir: str, job, setting: str, seed: int, method: str, profile: str, out: str, data_dir, device: str,
            mc_passes: int, confident_epochs) -> str:
    """Ray task body: one baseline on one trained run (``_run_dir`` is the train task's result) by ``job``
    (the serial bench's :func:`oodgen.bench.bench_one`, passed in so that this module imports no bench)."""
    from .._runtime import tune_allocator
    tune_allocator()
    job(setting, seed, [method], profile, out, data_dir, device, mc_passes, confident_epochs,
        progress=False, log=lambda *_: None)
    return f"{setting}/{method}/seed{seed}"


def bench_ray(settings, methods, seeds, profile: str, out, data_dir=None, device: str = "auto",
              mc_passes: int = 50, confident_epochs: int | None = None, *, address: str | None = None,
              cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, num_cpus: int | None = None,
              retrain_plain: bool = False, job=None, log=print) -> GridReport:
    """Run the (setting x seed x method) grid as Ray tasks; see the module docstring.  ``job`` runs one
    baseline job (default :func:`oodgen.bench.bench_one`; the bench passes it)."""
    if job is None:
        raise ExecutorError("bench_ray needs job=oodgen.bench.bench_one (oodgen bench passes it)")
    ray = _import_ray()
    # --retrain-plain: the training task rebuilds a lost plain classifier once, if a baseline scores it
    retrain = retrain_plain and any(needs_plain(m) for m in methods if m != "oodgen")
    out = str(Path(out).resolve())
    data_dir = None if data_dir is None else str(Path(data_dir).resolve())
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        except Exception as exc:        # Ray raises several types for an unreachable cluster
            raise ExecutorError(f"cannot start or join Ray ({type(exc).__name__}: {exc})") from None
        started = True
    opts = {"num_cpus": cpus_per_job, "num_gpus": gpus_per_job}
    train_task = ray.remote(_train).options(**opts)
    method_task = ray.remote(_method).options(**opts)
    report = GridReport()
    t0 = time.perf_counter()
    jobs: dict[str, object] = {}
    try:
        for setting in settings:
            for seed in seeds:
                key = f"{setting}/oodgen/seed{seed}"
                done = job_done(out, setting, "oodgen", seed)
                train_ref = train_task.remote(setting, seed, profile, out, data_dir, device, retrain)
                (report.skipped if done else report.ran).append(key)
                jobs[key] = train_ref
                for method in methods:
                    if method == "oodgen":
                        continue
                    mkey = f"{setting}/{method}/seed{seed}"
                    if job_done(out, setting, method, seed):
                        report.skipped.append(mkey)
                        continue
                    jobs[mkey] = method_task.remote(train_ref, job, setting, seed, method, profile, out, data_dir,
                                                    device, mc_passes, confident_epochs)
                    report.ran.append(mkey)
        log(f"[ray] {len(report.ran)} job(s) submitted, {len(report.skipped)} already finished")
        for key, ref in jobs.items():
            try:
                ray.get(ref)
            except Exception as exc:    # a failed job is reported, the others go on
                cause = getattr(exc, "cause", None) or exc
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                report.failed[key] = f"{type(cause).__name__}: {first}"
                log(f"[ray] FAILED {key}: {report.failed[key]}")
    finally:
        if started:
            ray.shutdown()
    report.ran = [k for k in report.ran if k not in report.failed]
    report.wall_s = time.perf_counter() - t0
    return report
