"""``oodgen bench``: the paper's comparison (Tables 1 and 2) over settings, methods and seeds.

For every in-distribution setting and seed:

1. the run directory ``DIR/<id>/oodgen/seed<k>`` is reused, or created with
   :func:`oodgen.run.run` (it trains the paper's method *and* a plain n-class Fig. 6c CNN,
   ``checkpoints/plain.pt``); its ``metrics.json`` is the "Ours" result;
2. the plain classifier's penultimate features and logits on the train / validation / test /
   OOD sets are cached in ``plain_outputs.npz`` of that run directory (and the MC-dropout
   moments in ``plain_mc.npz``), so every post-hoc method reuses one pass over the data;
3. every post-hoc baseline scores the plain classifier; ODIN and Mahalanobis are tuned
   (FPR at 95 % TPR) either on 1,000 held-out images of each test OOD set (``odin``,
   ``mahalanobis``: the usual, optimistic protocol; evaluation on the rest of that set) or on
   validation images vs uniform noise + Type I outliers of validation images made with the
   run's CVAE (``odin-fair``, ``mahalanobis-fair``; evaluation on the whole OOD sets);
4. the baselines that train their own classifier (the confident classifier with its GAN; VOS and its
   alpha = 0 control with the plain classifier's budget) train in ``DIR/<id>/<method>/seed<k>``
   (resumable);
5. each method writes ``DIR/<id>/<method>/seed<k>/metrics.json`` (the schema of
   ``oodgen run``'s metrics.json); a method whose metrics.json exists is skipped.

Finally ``DIR/tables/table1.{md,csv,json}`` (Ours / confident / ODIN / MD),
``table2.*`` (max-softmax / MC-dropout / mutual information) and ``extra.*`` (energy,
max-logit, KNN, ViM, pixel KNN, VOS) aggregate every cell as mean ± std over seeds beside the paper's number
(:file:`paper_tables.json`).  In-distribution images for every method are the setting's test
split; the in-distribution validation split is the one ``oodgen run`` holds out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import data as D
from ..config import PROFILES

# The method lists, names and table rendering live in oodgen.tables (re-exported here).
from .tables import (DEFAULT_METHODS, DERIVED, DISPLAY, METHODS, METRIC_LABELS, OURS,  # noqa: F401
                     SETTINGS, TABLE_METRICS, TABLE_TITLES, TABLES, _info, _infos, all_methods, bench_tables,
                     build_tables, default_methods, display, methods_by, paper_tables, score_used)
from ..utils import atomic_write_json, environment
# One (setting, seed): the run's data, models and cached outputs, and each method's evaluation.
from .methods import (CONFIDENT_EPOCHS, N_TUNE, OUTPUTS_FORMAT, BenchError, _Context,  # noqa: F401
                            _evaluate, _evaluate_tuned)
# One job's folder, its done test, the run's configuration and plain classifier (shared with the Ray executor).
from .jobs import (PLAIN_RETRAINED, ensure_plain, job_dir, job_done, needs_plain,  # noqa: F401
                         run_dir_config)
_run_dir_config, _needs_plain = run_dir_config, needs_plain       # the older private names


def bench_one(setting: str, seed: int, methods, profile: str, out, data_dir=None, device: str = "auto",
              mc_passes: int = 50, confident_epochs: int | None = None, progress: bool = False, log=print,
              retrain_plain: bool = False) -> None:
    """Run (or resume) every method of one setting and seed; writes the per-method metrics.json.

    ``retrain_plain``: when the run is finished but its ``checkpoints/plain.pt`` is gone (checkpoints
    are not kept in git), train that plain classifier alone - the same seed, recipe and training
    split as ``oodgen run`` (:func:`oodgen.run.train_plain_classifier`) - instead of stopping."""
    from ..run import run
    out = Path(out)
    run_dir = job_dir(out, setting, "oodgen", seed)
    cfg = run_dir_config(run_dir, setting, seed, profile, device)
    if not job_done(out, setting, "oodgen", seed):
        run(cfg, run_dir, data_dir, progress=progress, log=log)
    pending = [m for m in methods if m != "oodgen" and not job_done(out, setting, m, seed)]
    if not pending:
        return
    if confident_epochs is None:
        confident_epochs = CONFIDENT_EPOCHS.get(profile, 10)
    plain_path = run_dir / "checkpoints" / "plain.pt"
    if retrain_plain and any(needs_plain(m) for m in pending):
        ensure_plain(cfg, run_dir, data_dir, progress, log)
    retrained = (run_dir / "checkpoints" / PLAIN_RETRAINED).exists()
    ctx = _Context(cfg, run_dir, data_dir, mc_passes, log)
    for method in pending:
        t0 = time.perf_counter()
        log(f"[bench] {setting} seed {seed}: {method}")
        res = _evaluate(ctx, method, confident_epochs, log)
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
            "classifier": ("its own, trained by the method (hyper_parameters)" if _info(method).consumes == "trains"
                           else "none (pixel space)" if _info(method).classifier_free
                           else f"the plain n-class Fig. 6c CNN of {plain_path}"
                           + (" (trained alone by oodgen bench --retrain-plain: the run's seed, recipe and "
                              "training split)" if retrained else "")),
            "timings_s": {"total": time.perf_counter() - t0},
            "config": {**cfg.to_dict(), "bench": {"mc_passes": mc_passes, "confident_epochs": confident_epochs,
                                                  "n_tune": N_TUNE}},
            "environment": environment(),
            "metrics_note": "percent; in-distribution positive; scores higher = more OOD",
        }
        atomic_write_json(job_dir(out, setting, method, seed) / "metrics.json", metrics)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def bench(settings, methods, seeds, profile: str, out, data_dir=None, device: str = "auto", mc_passes: int = 50,
          confident_epochs: int | None = None, progress: bool = False, log=print, retrain_plain: bool = False) -> dict:
    """Every (setting, seed, method), then the tables; returns the tables' JSON documents."""
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; use any of {', '.join(all_methods())}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(PROFILES)}")
    for setting in settings:
        for seed in seeds:
            bench_one(setting, seed, methods, profile, out, data_dir, device, mc_passes, confident_epochs,
                      progress, log, retrain_plain=retrain_plain)
    return tables_of_everything(out, settings, seeds)


def tables_of_everything(out, settings, seeds) -> dict:
    """The tables of every setting and seed in ``out`` (and of ``settings`` / ``seeds``), so that a
    bench of one setting or seed does not rewrite the tables without the others."""
    root = Path(out)
    settings_all = tuple(dict.fromkeys([*(s for s in SETTINGS if (root / s).is_dir()), *settings]))
    seeds_all = sorted({*seeds, *(int(p.name[4:]) for p in root.glob("*/*/seed*") if p.name[4:].isdigit())})
    return build_tables(out, settings_all, seeds_all)


def _main(a: argparse.Namespace) -> int:
    from ..detectors.base import InputError
    from ..run import RunError
    settings = SETTINGS if a.id == "all" else (a.id,)
    try:
        if a.tables_only:
            build_tables(a.out, settings, a.seeds)
        elif a.executor == "ray":
            from .executors import ExecutorError, bench_ray
            try:
                rep = bench_ray(settings, a.methods, a.seeds, a.profile, a.out, a.data_dir, a.device, a.mc_passes,
                                a.confident_epochs, address=a.address, cpus_per_job=a.cpus_per_job,
                                gpus_per_job=a.gpus_per_job, retrain_plain=a.retrain_plain, job=bench_one)
            except ExecutorError as exc:
                print(f"oodgen bench: error: {exc}", file=sys.stderr)
                return 2
            tables_of_everything(a.out, settings, a.seeds)
            print(f"[ray] {len(rep.ran)} job(s) ran, {len(rep.skipped)} skipped (finished before), "
                  f"{len(rep.failed)} failed, {rep.wall_s:.0f} s")
            if rep.failed:
                for key, err in rep.failed.items():
                    print(f"oodgen bench: job {key} failed: {err}", file=sys.stderr)
                return 1
        else:
            bench(settings, a.methods, a.seeds, a.profile, a.out, a.data_dir, a.device, a.mc_passes,
                  a.confident_epochs, progress=not a.no_progress, retrain_plain=a.retrain_plain)
        print(f"tables written to {Path(a.out) / 'tables'}")
        return 0
    except (D.DataError, InputError, RunError, BenchError, ValueError) as exc:
        print(f"oodgen bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oodgen bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``oodgen bench`` to an argparse sub-parser collection."""
    b = subparsers.add_parser("bench", help="compare against the baselines (the paper's Tables 1 and 2)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--id", required=True, choices=list(SETTINGS) + ["all"], help="in-distribution setting(s)")
    b.add_argument("--methods", nargs="+", default=list(default_methods()), choices=list(all_methods()), metavar="METHOD",
                   help=f"methods to run (default: all but the -fair variants); any of {', '.join(all_methods())}")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    b.add_argument("--out", required=True, help="benchmark folder (resumed: finished runs are skipped)")
    b.add_argument("--data-dir", default=None, help="folder searched first for datasets")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--mc-passes", type=int, default=50, help="dropout passes of MC-dropout / mutual information")
    b.add_argument("--confident-epochs", type=int, default=None,
                   help="confident-classifier epochs (default per profile: "
                        + ", ".join(f"{k} {v}" for k, v in CONFIDENT_EPOCHS.items()) + ")")
    b.add_argument("--tables-only", action="store_true", help="only rebuild the tables from existing results")
    b.add_argument("--executor", choices=["serial", "ray"], default="serial",
                   help="serial (default) or ray: every (setting, seed, method) job a Ray task (pip install 'oodgen[ray]')")
    b.add_argument("--address", default=None, help="with --executor ray: join this Ray cluster (default: start a local one)")
    b.add_argument("--cpus-per-job", type=float, default=1.0, help="with --executor ray: CPUs each job declares")
    b.add_argument("--gpus-per-job", type=float, default=0.0, help="with --executor ray: GPUs each job declares")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.add_argument("--retrain-plain", action="store_true",
                   help="when a finished run's checkpoints/plain.pt is gone, train that plain classifier alone "
                        "(the run's seed, recipe and training split) instead of stopping; recorded in each "
                        "baseline's metrics.json")
    b.set_defaults(func=_main)
    return b
