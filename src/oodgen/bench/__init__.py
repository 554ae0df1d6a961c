"""The bench (``oodgen bench``): the paper's comparison over settings, methods and seeds.

- :mod:`~oodgen.bench.jobs`: one job is one (setting, method, seed); its folder, its done test, resume.
- :mod:`~oodgen.bench.methods`: how each method is evaluated on a trained run.
- :mod:`~oodgen.bench.executors`: the Ray executor over the same jobs.
- :mod:`~oodgen.bench.tables`: the methods the bench knows, and its tables.
- :mod:`~oodgen.bench.cli`: :func:`bench`, :func:`bench_one` and the command line.
"""
from .cli import add_parser, bench, bench_one, tables_of_everything
from .executors import ExecutorError, GridReport, bench_ray
from .jobs import PLAIN_RETRAINED, ensure_plain, job_dir, job_done, needs_plain, run_dir_config
from .methods import CONFIDENT_EPOCHS, N_TUNE, BenchError
from .tables import (DEFAULT_METHODS, DERIVED, DISPLAY, METHODS, OURS, SETTINGS, TABLE_METRICS, TABLE_TITLES,
                     TABLES, all_methods, build_tables, default_methods, display, paper_tables, score_used)

__all__ = ["add_parser", "bench", "bench_one", "tables_of_everything", "ExecutorError", "GridReport", "bench_ray",
           "PLAIN_RETRAINED", "ensure_plain", "job_dir", "job_done", "needs_plain", "run_dir_config",
           "CONFIDENT_EPOCHS", "N_TUNE", "BenchError", "DEFAULT_METHODS", "DERIVED", "DISPLAY", "METHODS", "OURS",
           "SETTINGS", "TABLE_METRICS", "TABLE_TITLES", "TABLES", "all_methods", "build_tables", "default_methods",
           "display", "paper_tables", "score_used"]
