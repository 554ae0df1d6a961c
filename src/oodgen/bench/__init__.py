"""The bench (``oodgen bench``): the paper's comparison over settings, methods and seeds, layered bottom up:

- :mod:`~oodgen.bench.jobs`: one job is one (setting, method, seed): its folder, its done test (resume),
  the grid of jobs, and the options every job runs with (:class:`BenchOptions`);
- :mod:`~oodgen.bench.tables`: which methods the bench knows (read from the registry) and its tables;
- :mod:`~oodgen.bench.methods`: how each method is evaluated on a trained run;
- :mod:`~oodgen.bench.core`: one (setting, seed), job by job (:func:`bench_one`);
- :mod:`~oodgen.bench.executors`: the serial and the Ray executor over the same jobs;
- :mod:`~oodgen.bench.cli`: :func:`bench` (the jobs, then the tables) and ``oodgen bench``.
"""
from .cli import add_parser, bench, options_from_args
from .core import bench_one, train_run
from .executors import EXECUTORS, ExecutorError, GridReport, bench_ray, bench_serial, run_jobs
from .jobs import (PLAIN_RETRAINED, BenchError, BenchOptions, ensure_plain, grid, job_dir, job_done, job_key,
                   run_dir_config)
from .methods import CONFIDENT_EPOCHS, N_TUNE, needs_plain
from .tables import (DEFAULT_METHODS, DERIVED, DISPLAY, METHODS, OURS, SETTINGS, TABLE_METRICS, TABLE_TITLES,
                     TABLES, all_methods, build_tables, default_methods, display, paper_tables, score_used,
                     tables_of_everything)

__all__ = ["add_parser", "bench", "options_from_args", "bench_one", "train_run", "EXECUTORS", "ExecutorError",
           "GridReport", "bench_ray", "bench_serial", "run_jobs", "PLAIN_RETRAINED", "BenchError", "BenchOptions",
           "ensure_plain", "grid", "job_dir", "job_done", "job_key", "run_dir_config", "CONFIDENT_EPOCHS", "N_TUNE",
           "needs_plain", "DEFAULT_METHODS", "DERIVED", "DISPLAY", "METHODS", "OURS", "SETTINGS", "TABLE_METRICS",
           "TABLE_TITLES", "TABLES", "all_methods", "build_tables", "default_methods", "display", "paper_tables",
           "score_used", "tables_of_everything"]
