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
from pathlib import Path

from .. import data as D
from ..config import PROFILES
from ..detectors.base import InputError
from ..run import RunError
from .executors import EXECUTORS, ExecutorError, run_jobs
from .jobs import BenchError, BenchOptions
from .methods import CONFIDENT_EPOCHS
from .tables import SETTINGS, all_methods, build_tables, default_methods, tables_of_everything


def bench(settings, methods, seeds, opts: BenchOptions) -> dict:
    """Every (setting, seed, method) job by the executor ``opts.executor`` names, then the tables; returns the
    tables' JSON documents.  Jobs that failed on Ray (whose other jobs run on) raise :class:`BenchError` once
    the tables of those that finished are written."""
    report = run_jobs(settings, methods, seeds, opts)
    tables = tables_of_everything(opts.out, settings, seeds)
    if report.failed:
        raise BenchError(f"{len(report.failed)} job(s) failed: "
                         + "; ".join(f"{key}: {err}" for key, err in report.failed.items()))
    return tables


def options_from_args(a: argparse.Namespace) -> BenchOptions:
    """The bench's options from ``oodgen bench``'s flags."""
    return BenchOptions(profile=a.profile, out=a.out, data_dir=a.data_dir, device=a.device, mc_passes=a.mc_passes,
                        confident_epochs=a.confident_epochs, progress=not a.no_progress,
                        retrain_plain=a.retrain_plain, executor=a.executor, address=a.address,
                        cpus_per_job=a.cpus_per_job, gpus_per_job=a.gpus_per_job)


def _main(a: argparse.Namespace) -> int:
    settings = SETTINGS if a.id == "all" else (a.id,)
    try:
        opts = options_from_args(a)
        if a.tables_only:
            build_tables(opts.out, settings, a.seeds)
        else:
            rep = run_jobs(settings, a.methods, a.seeds, opts)
            tables_of_everything(opts.out, settings, a.seeds)
            if opts.executor == "ray":
                print(f"[ray] {len(rep.ran)} job(s) ran, {len(rep.skipped)} skipped (finished before), "
                      f"{len(rep.failed)} failed, {rep.wall_s:.0f} s")
            if rep.failed:
                for key, err in rep.failed.items():
                    print(f"oodgen bench: job {key} failed: {err}", file=sys.stderr)
                return 1
        print(f"tables written to {Path(opts.out) / 'tables'}")
        return 0
    except (D.DataError, InputError, RunError, BenchError, ExecutorError, ValueError) as exc:
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
                   help=f"methods to run (default: all but the -fair variants and vos-alpha0, the energy column's twin); any of {', '.join(all_methods())}")
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
    b.add_argument("--executor", choices=list(EXECUTORS), default="serial",
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
