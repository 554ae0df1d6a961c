"""The bench's jobs, written once here for the serial and the Ray executor (:mod:`oodgen.bench.executors`),
the tables and every method: one job is one (setting, method, seed); its folder is
``OUT/<setting>/<method>/seed<k>`` (:func:`job_dir`) and it is done when that folder holds ``metrics.json``
(:func:`job_done`), so a bench run again resumes where it stopped.  Method ``oodgen`` is our run, which every
other method of its setting and seed reads (:func:`run_dir_config`: the configuration of a run folder;
:func:`ensure_plain`: its plain classifier rebuilt).  Also the options every job of one bench runs with
(:class:`BenchOptions`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from ..config import PROFILES, RunConfig
from ..utils import resolve_device

# marks a run folder whose plain.pt was trained by --retrain-plain (kept beside the checkpoint)
PLAIN_RETRAINED = "plain.retrained"


class BenchError(RuntimeError):
    """A benchmark cannot run (a run directory holds another configuration, ...)."""


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How every job of one bench runs: built once (``oodgen bench`` builds it from its flags) and passed to
    :func:`~oodgen.bench.bench`, :func:`~oodgen.bench.bench_one` and the executors.

    ``out``: the bench's folder (resumed); ``data_dir``: searched first for datasets; ``mc_passes``: dropout
    passes of MC-dropout and mutual information; ``confident_epochs``: epochs of the confident classifier
    (None: :data:`~oodgen.bench.methods.CONFIDENT_EPOCHS` of the profile); ``retrain_plain``: train a finished
    run's lost ``checkpoints/plain.pt`` alone (:func:`ensure_plain`) instead of stopping.  The executor:
    ``"serial"`` (this process) or ``"ray"``, which joins the cluster at ``address`` (None: starts a local
    instance of ``num_cpus`` CPUs, None: this machine's) and declares ``cpus_per_job`` / ``gpus_per_job`` for
    every job."""

    profile: str
    out: str | Path
    data_dir: str | Path | None = None
    device: str = "auto"
    mc_passes: int = 50
    confident_epochs: int | None = None
    progress: bool = False
    retrain_plain: bool = False
    log: Callable[..., None] = print
    executor: str = "serial"
    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; use one of {sorted(PROFILES)}")


def job_key(setting: str, method: str, seed: int) -> str:
    """A job's name, which is also its folder inside the bench's: ``<setting>/<method>/seed<k>``."""
    return f"{setting}/{method}/seed{seed}"


def job_dir(out, setting: str, method: str, seed: int) -> Path:
    """The folder of one job: ``OUT/<setting>/<method>/seed<k>`` (method ``oodgen``: our run)."""
    return Path(out) / job_key(setting, method, seed)


def job_done(out, setting: str, method: str, seed: int) -> bool:
    """Whether a job has finished (its ``metrics.json`` is written last, atomically)."""
    return (job_dir(out, setting, method, seed) / "metrics.json").exists()


def seeds_in(out) -> set[int]:
    """The seeds of every job folder in ``out``."""
    return {int(p.name[4:]) for p in Path(out).glob("*/*/seed*") if p.name[4:].isdigit()}


def grid(settings, seeds, methods) -> list[tuple[str, int, tuple[str, ...]]]:
    """The bench's jobs in running order, as ``(setting, seed, methods)``: our run of that setting and seed
    (method ``oodgen``, run or reused whether or not ``methods`` names it) comes first, then the other methods."""
    others = tuple(m for m in methods if m != "oodgen")
    return [(setting, seed, others) for setting in settings for seed in seeds]


def run_dir_config(run_dir: Path, setting: str, seed: int, profile: str, device: str) -> RunConfig:
    """The configuration of the run in ``run_dir`` (a new one when it has none); a folder that holds
    another setting, seed or profile is refused (:class:`BenchError`)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return RunConfig(id=setting, seed=seed, profile=profile, device=device)
    cfg = RunConfig.from_dict(json.loads(path.read_text()))
    if (cfg.id, cfg.seed, cfg.profile) != (setting, seed, profile):
        raise BenchError(f"{run_dir} holds a run of id={cfg.id} seed={cfg.seed} profile={cfg.profile}, "
                         f"not id={setting} seed={seed} profile={profile}; use another --out")
    # The device is this call's, not the stored run's: a run trained with --device cuda is
    # benchmarked on a CPU-only machine too (the device is not part of a run's identity).
    return dataclasses.replace(cfg, device=device)


def ensure_plain(cfg: RunConfig, run_dir: Path, data_dir=None, progress: bool = False, log=print) -> None:
    """``--retrain-plain``: when ``run_dir/checkpoints/plain.pt`` is missing, train that plain classifier
    alone (:func:`oodgen.run.train_plain_classifier`: the run's seed, recipe and training split).  It
    trains into ``plain.retraining.pt`` (an interrupted retraining resumes there) and becomes
    ``plain.pt`` only when finished, so a half-trained network is never scored; the marker
    :data:`PLAIN_RETRAINED` records that it was retrained.  Called once per (setting, seed): by
    :func:`oodgen.bench.bench_one`, and by the Ray executor's training task before its baseline tasks start."""
    from ..run import load_setting, train_plain_classifier
    ckpt = Path(run_dir) / "checkpoints"
    plain = ckpt / "plain.pt"
    if plain.exists():
        return
    partial = ckpt / "plain.retraining.pt"
    log(f"[bench] {cfg.id} seed {cfg.seed}: {plain} is missing; training the run's plain classifier alone "
        "(same seed, recipe and training split as oodgen run)")
    data = load_setting(cfg, data_dir)
    train_plain_classifier(cfg, data.x, data.y, partial, resolve_device(cfg.device), progress, log)
    (ckpt / PLAIN_RETRAINED).touch()
    partial.replace(plain)
