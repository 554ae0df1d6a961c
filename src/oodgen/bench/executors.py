"""The bench's executors, two ways to run the same jobs (:func:`oodgen.bench.jobs.grid`), chosen by
``oodgen bench --executor``: :func:`bench_serial` runs them one after the other in this process;
:func:`bench_ray` runs them as Ray tasks (``--executor ray [--address ADDR]``).

On Ray, each (setting, seed) run of our detector is one task, and each (setting, seed, method) of the
baselines is another that takes the run's task as an argument, so Ray starts it when that run is
trained (each run is trained once, however many methods share it).  Every task declares its
resources (``--cpus-per-job``, ``--gpus-per-job``).  Results land where the serial executor writes
them (``OUT/<setting>/<method>/seed<k>/metrics.json``), finished jobs are skipped (resume is the same
done test, :func:`oodgen.bench.jobs.job_done`), and a job that fails is reported with its error while the
others run on (the serial executor stops at the first; run it again to resume).

The default starts a local Ray instance with this machine's cores; ``--address`` joins a running
cluster (``ray start --head`` on one machine, ``ray start --address=...`` on the others; the
output folder must then be on storage every node sees).  Ray is an optional extra:
``pip install 'oodgen[ray]'``.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .core import bench_one, train_run
from .jobs import BenchOptions, ensure_plain, grid, job_done, job_key
from .methods import needs_plain
from .tables import all_methods


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


def _silent(*_args, **_kwargs) -> None:
    """The log of a job on a Ray worker (its messages would interleave with every other job's)."""


def _plan(report: GridReport, out, setting: str, seed: int, methods) -> list[str]:
    """Records the jobs of one (setting, seed) in ``report`` (finished ones as skipped); returns the methods
    whose jobs are still to run (our run's job is always run: it is reused when done)."""
    done = job_done(out, setting, "oodgen", seed)
    (report.skipped if done else report.ran).append(job_key(setting, "oodgen", seed))
    pending = []
    for method in methods:
        done = job_done(out, setting, method, seed)
        (report.skipped if done else report.ran).append(job_key(setting, method, seed))
        if not done:
            pending.append(method)
    return pending


def bench_serial(settings, methods, seeds, opts: BenchOptions) -> GridReport:
    """Every job in this process, one (setting, seed) after the other; the first job that fails stops the
    grid with its error (run again to resume)."""
    report = GridReport()
    t0 = time.perf_counter()
    for setting, seed, others in grid(settings, seeds, methods):
        bench_one(setting, seed, _plan(report, opts.out, setting, seed, others), opts)
    report.wall_s = time.perf_counter() - t0
    return report


def _train(setting: str, seed: int, opts: BenchOptions) -> str:
    """Ray task body: train and evaluate our detector for one (setting, seed) unless it is done; with
    ``opts.retrain_plain``, also the plain classifier of a finished run whose checkpoint is gone
    (:func:`oodgen.bench.jobs.ensure_plain`), once, before the baseline tasks that score it start."""
    from .._runtime import tune_allocator
    tune_allocator()
    cfg, run_dir = train_run(setting, seed, opts)
    if opts.retrain_plain:
        ensure_plain(cfg, run_dir, opts.data_dir, opts.progress, opts.log)
    return str(run_dir)


def _method(_run_dir: str, setting: str, seed: int, method: str, opts: BenchOptions) -> str:
    """Ray task body: one baseline on one trained run (``_run_dir`` is the train task's result)."""
    from .._runtime import tune_allocator
    tune_allocator()
    bench_one(setting, seed, [method], opts)
    return job_key(setting, method, seed)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once when a ``host:port`` (or ``ray://host:port``) Ray address accepts no TCP connection:
    ``ray.init`` itself retries an unreachable head for minutes.  ``auto`` and other forms pass."""
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                            "`ray start --head` there, or leave --address out to run a local instance") from None


def _start_ray(ray, opts: BenchOptions) -> bool:
    """Joins ``opts.address`` or starts a local instance, unless Ray is running; returns whether it started it."""
    if ray.is_initialized():
        return False
    if opts.address:
        check_reachable(opts.address)
    try:
        if opts.address:
            ray.init(address=opts.address, log_to_driver=False)
        else:
            ray.init(num_cpus=opts.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except Exception as exc:        # Ray raises several types for an unreachable cluster
        raise ExecutorError(f"cannot start or join Ray ({type(exc).__name__}: {exc})") from None
    return True


def bench_ray(settings, methods, seeds, opts: BenchOptions) -> GridReport:
    """Run the (setting x seed x method) grid as Ray tasks; see the module docstring."""
    ray = _import_ray()
    # Every task writes under absolute paths (a worker's working directory is its own), quietly.
    task = replace(opts, out=str(Path(opts.out).resolve()), progress=False, log=_silent,
                   data_dir=None if opts.data_dir is None else str(Path(opts.data_dir).resolve()))
    # --retrain-plain: the training task rebuilds a lost plain classifier once, if a baseline scores it
    retrain = opts.retrain_plain and any(needs_plain(m) for m in methods if m != "oodgen")
    train_opts = replace(task, retrain_plain=retrain)
    method_opts = replace(task, retrain_plain=False)
    started = _start_ray(ray, opts)
    resources = {"num_cpus": opts.cpus_per_job, "num_gpus": opts.gpus_per_job}
    train_task = ray.remote(_train).options(**resources)
    method_task = ray.remote(_method).options(**resources)
    report = GridReport()
    t0 = time.perf_counter()
    jobs: dict[str, object] = {}
    try:
        for setting, seed, others in grid(settings, seeds, methods):
            pending = _plan(report, task.out, setting, seed, others)
            jobs[job_key(setting, "oodgen", seed)] = train_ref = train_task.remote(setting, seed, train_opts)
            for method in pending:
                jobs[job_key(setting, method, seed)] = method_task.remote(train_ref, setting, seed, method, method_opts)
        opts.log(f"[ray] {len(report.ran)} job(s) submitted, {len(report.skipped)} already finished")
        for key, ref in jobs.items():
            try:
                ray.get(ref)
            except Exception as exc:    # a failed job is reported, the others go on
                cause = getattr(exc, "cause", None) or exc
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                report.failed[key] = f"{type(cause).__name__}: {first}"
                opts.log(f"[ray] FAILED {key}: {report.failed[key]}")
    finally:
        if started:
            ray.shutdown()
    report.ran = [k for k in report.ran if k not in report.failed]
    report.wall_s = time.perf_counter() - t0
    return report


#: ``oodgen bench --executor NAME``
EXECUTORS = {"serial": bench_serial, "ray": bench_ray}


def run_jobs(settings, methods, seeds, opts: BenchOptions) -> GridReport:
    """Every (setting, seed, method) job of the grid, by the executor ``opts.executor`` names."""
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; use any of {', '.join(all_methods())}")
    if opts.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {opts.executor!r}; use one of {', '.join(EXECUTORS)}")
    return EXECUTORS[opts.executor](settings, methods, seeds, opts)
