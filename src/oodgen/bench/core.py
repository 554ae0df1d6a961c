"""One (setting, seed) of the bench, job by job: our run (job ``oodgen``) trained by :func:`oodgen.run.run` or
reused (:func:`train_run`), then every other method's job that is not done evaluated on it and written as its
``metrics.json`` (:func:`bench_one`).  The serial and the Ray executor (:mod:`oodgen.bench.executors`) both
run these.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import RunConfig
from ..run import run
from ..utils import atomic_write_json, environment
from .jobs import PLAIN_RETRAINED, BenchOptions, ensure_plain, job_dir, job_done, run_dir_config
from .methods import CONFIDENT_EPOCHS, N_TUNE, Context, evaluate, needs_plain
from .tables import method_info, score_used


def train_run(setting: str, seed: int, opts: BenchOptions) -> tuple[RunConfig, Path]:
    """Our run of one (setting, seed), the job every other method of it reads: reused when it is done,
    else trained (or resumed) by ``oodgen run``; returns its configuration and folder."""
    run_dir = job_dir(opts.out, setting, "oodgen", seed)
    cfg = run_dir_config(run_dir, setting, seed, opts.profile, opts.device)
    if not job_done(opts.out, setting, "oodgen", seed):
        run(cfg, run_dir, opts.data_dir, progress=opts.progress, log=opts.log)
    return cfg, run_dir


def bench_one(setting: str, seed: int, methods, opts: BenchOptions) -> None:
    """Run (or resume) every method of one setting and seed; writes the per-method metrics.json.

    ``opts.retrain_plain``: when the run is finished but its ``checkpoints/plain.pt`` is gone (checkpoints
    are not kept in git), train that plain classifier alone - the same seed, recipe and training
    split as ``oodgen run`` (:func:`oodgen.run.train_plain_classifier`) - instead of stopping."""
    cfg, run_dir = train_run(setting, seed, opts)
    pending = [m for m in methods if m != "oodgen" and not job_done(opts.out, setting, m, seed)]
    if not pending:
        return
    confident_epochs = opts.confident_epochs
    if confident_epochs is None:
        confident_epochs = CONFIDENT_EPOCHS.get(opts.profile, 10)
    if opts.retrain_plain and any(needs_plain(m) for m in pending):
        ensure_plain(cfg, run_dir, opts.data_dir, opts.progress, opts.log)
    ctx = Context(cfg, run_dir, opts.data_dir, opts.mc_passes, opts.log)
    for method in pending:
        t0 = time.perf_counter()
        opts.log(f"[bench] {setting} seed {seed}: {method}")
        folder = job_dir(opts.out, setting, method, seed)
        res = evaluate(ctx, method, folder, confident_epochs, opts.log)
        metrics = {
            "id": setting,
            "method": method,
            "seed": seed,
            "profile": cfg.profile,
            "score": score_used(method),
            "accuracy": res["accuracy"],
            "ood": res["ood"],
            "n_test_in": len(ctx.images["test"]),
            "n_ood": res["n_ood"],
            "tuning": res["tuning"],
            "hyper_parameters": res["hyper_parameters"],
            "classifier": _classifier(method, run_dir),
            "timings_s": {"total": time.perf_counter() - t0},
            "config": {**cfg.to_dict(), "bench": {"mc_passes": opts.mc_passes, "confident_epochs": confident_epochs,
                                                  "n_tune": N_TUNE}},
            "environment": environment(),
            "metrics_note": "percent; in-distribution positive; scores higher = more OOD",
        }
        atomic_write_json(folder / "metrics.json", metrics)


def _classifier(method: str, run_dir: Path) -> str:
    """What a method's metrics.json says about the classifier it scored."""
    if method_info(method).consumes == "trains":
        return "its own, trained by the method (hyper_parameters)"
    if method_info(method).classifier_free:
        return "none (pixel space)"
    plain_path = run_dir / "checkpoints" / "plain.pt"
    retrained = (run_dir / "checkpoints" / PLAIN_RETRAINED).exists()
    return (f"the plain n-class Fig. 6c CNN of {plain_path}"
            + (" (trained alone by oodgen bench --retrain-plain: the run's seed, recipe and "
               "training split)" if retrained else ""))
