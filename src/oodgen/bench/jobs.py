"""The bench's jobs, shared by the serial bench (:mod:`oodgen.bench`) and the Ray executor
(:mod:`oodgen.executors`): one job is one (setting, method, seed), its folder is
``OUT/<setting>/<method>/seed<k>`` and it is done when that folder holds ``metrics.json``.  Also
the configuration of a run folder, and the plain classifier the post-hoc baselines score.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .methods import BenchError
from ..config import RunConfig
from .tables import _info
from ..utils import resolve_device

# marks a run folder whose plain.pt was trained by --retrain-plain (kept beside the checkpoint)
PLAIN_RETRAINED = "plain.retrained"


def job_dir(out, setting: str, method: str, seed: int) -> Path:
    """The folder of one job: ``OUT/<setting>/<method>/seed<k>`` (method ``oodgen``: our run)."""
    return Path(out) / setting / method / f"seed{seed}"


def job_done(out, setting: str, method: str, seed: int) -> bool:
    """Whether a job has finished (its ``metrics.json`` is written last, atomically)."""
    return (job_dir(out, setting, method, seed) / "metrics.json").exists()


def run_dir_config(run_dir: Path, setting: str, seed: int, profile: str, device: str) -> RunConfig:
    """The configuration of the run in ``run_dir`` (a new one when it has none); a folder that holds
    another setting, seed or profile is refused (:class:`~oodgen.bench_methods.BenchError`)."""
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
    :func:`oodgen.bench.bench_one`, and by the Ray grid's training task before its baseline tasks start."""
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


def needs_plain(method: str) -> bool:
    """Whether ``method`` scores the run's plain classifier (not a baseline that trains its own
    classifier, nor a pixel-space method)."""
    info = _info(method)
    return not (info.consumes == "trains" or info.classifier_free)
