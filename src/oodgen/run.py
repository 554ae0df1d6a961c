"""``oodgen run``: train the detector of one in-distribution setting and evaluate it on every
OOD set of that setting, resuming from the run directory's checkpoints.

Run directory layout::

    DIR/config.json          the configuration (a rerun with another config is refused)
    DIR/checkpoints/*.pt     per-epoch checkpoints (CVAE, n+1 classifier, plain classifier)
    DIR/detector.pt          everything `oodgen score` needs (weights, threshold, config, versions)
    DIR/metrics.json         results (schema below), written last and atomically
    DIR/results.md           the same as a Markdown table
"""
from __future__ import annotations

import json
import re
import resource
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .config import Profile, RunConfig, Variant
from .data.setting import DataSetting
from .detectors.fusion import MIN_CALIBRATION
from .detectors.image_stats import STATS as STAT_NAMES
from .detectors.oodgen import SCORES, OODGen
from .generate.panel import N_PANEL
from .metrics import ood_metrics
from .models import Fig6cCNN, inference_copy, resolve_precision
from .train import load_checkpoint, predict_logits, train_plain
from .distributed import current as current_dist
from .data.user import stratified_head
from .errors import first_line
from .preflight import check_user_run, load_user_ood
from .summary import markdown_table
from .utils import atomic_write_bytes, atomic_write_json, environment, read_json_object, resolve_device

VAL_FRACTION = 1 / 12          # 5,000 of MNIST's 60,000 training images: threshold + tuning split
SPLIT_SEED = 20190101          # the validation split is the same for every run seed


class RunError(RuntimeError):
    """A run cannot start (conflicting configuration in the run directory, ...)."""


def train_val_split(n: int, min_val: int = 1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(min_val, int(round(n * VAL_FRACTION)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# Images of each OOD set (a seeded sample) whose image statistics are all computed for the
# per-statistic AUROCs (metrics["fisher_components"]); reject+fisher itself needs them only for the
# images the classifier accepts, so the CVAE pass, zlib and the pixel search skip the others.
N_COMPONENT_SAMPLE = 2000
USER_SYNTHETIC = ("gaussian", "uniform", "sphere")   # noise sets that follow a custom run's image shape
USER_TEST_FRACTION = 0.2
USER_MIN_VAL = 200


def _user_ood(cfg: RunConfig) -> dict[str, str]:
    """{name: path} of a custom run's ``--ood NAME=PATH`` sets."""
    out: dict[str, str] = {}
    for entry in cfg.ood or ():
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise D.DataError(f"--ood expects NAME=PATH, got {entry!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise D.DataError(f"--ood name {name!r}: use letters, digits, '_', '.', '-'")
        if name in USER_SYNTHETIC or name in out:
            raise D.DataError(f"--ood name {name!r} is taken (the noise sets {USER_SYNTHETIC} are always added)")
        if not Path(path).exists():
            raise D.DataError(f"--ood {name}={path}: no such file or folder")
        out[name] = path
    return out


def ood_set_names(cfg: RunConfig, data_dir=None) -> list[str]:
    """The OOD sets a run evaluates on: its setting's, or a custom run's own plus the noise sets."""
    if cfg.train is None:
        return D.ood_sets(cfg.id, data_dir)
    return [*_user_ood(cfg), *USER_SYNTHETIC]


def load_ood_set(cfg: RunConfig, name: str, data_dir=None, *, n=None, seed: int = 0,
                 sphere_radius: float | None = None, shape=(1, 28, 28)) -> D.ImageSet:
    user = _user_ood(cfg) if cfg.train is not None else {}
    if name not in user:
        return D.load(name, "test", data_dir, n=n, seed=seed, sphere_radius=sphere_radius, shape=shape)
    return load_user_ood(name, user[name], shape, size=cfg.size, channels=cfg.channels, n=n)


def _load_user_setting(cfg: RunConfig):
    from .data.user import UserDataError, load_user, split
    data = load_user(cfg.train, size=cfg.size, channels=cfg.channels)
    if cfg.test:
        test = load_user(cfg.test, size=cfg.size, channels=cfg.channels)
        if test.shape != data.shape:
            raise UserDataError(f"{cfg.test}: images are {test.shape} (C, H, W) but the training images "
                                f"{data.shape}; pass --size H W and/or --channels")
        unknown = sorted(set(test.classes) - set(data.classes))
        if unknown:
            raise UserDataError(f"{cfg.test}: classes {unknown} are not among the training classes {data.classes}")
        index = {c: i for i, c in enumerate(data.classes)}
        test.labels = np.array([index[test.classes[k]] for k in test.labels], dtype=np.int64)
        test.classes = data.classes
        split_info = {"test": str(cfg.test)}
    else:
        data, test, test_idx = split(data, USER_TEST_FRACTION, SPLIT_SEED)
        split_info = {"test": f"seeded {USER_TEST_FRACTION:.0%} of --train (seed {SPLIT_SEED})",
                      "n_test": int(len(test_idx))}
    info = {"classes": data.classes, "image_shape": list(data.shape), "train_sha256": data.digest(),
            "test_sha256": test.digest(), **split_info}
    return data.images, data.labels, test.images, test.labels, info


def load_setting(cfg: RunConfig, data_dir=None) -> DataSetting:
    """The setting's data (:class:`~oodgen.data.setting.DataSetting`): a built-in setting's splits, or a
    custom run's ``--train`` / ``--test`` (its provenance in ``info``); validation = the seeded split
    :func:`train_val_split` of the training images."""
    prof = cfg.prof
    info: dict = {}
    if cfg.train is not None:
        x, y, xt, yt, info = _load_user_setting(cfg)
        # a profile's smaller budget keeps every class (your folder may be sorted by class)
        if prof.n_train is not None:
            keep = stratified_head(y, prof.n_train)
            x, y = x[keep], y[keep]
        if prof.n_eval is not None:
            keep = stratified_head(yt, prof.n_eval)
            xt, yt = xt[keep], yt[keep]
        # small sets: keep enough validation images for the thresholds and the fused rules' calibration
        tr, va = train_val_split(len(x), min_val=min(USER_MIN_VAL, max(MIN_CALIBRATION, len(x) // 4)))
        all_x = x
    else:
        if cfg.id not in D.SETTINGS:
            raise D.DataError(f"unknown in-distribution setting {cfg.id!r}; use one of {', '.join(D.SETTINGS)}")
        train = D.load(cfg.id, "train", data_dir)
        test = D.load(cfg.id, "test", data_dir, n=prof.n_eval)
        all_x, x, y, xt, yt = train.images, train.images, train.labels, test.images, test.labels
        if prof.n_train is not None:
            x, y = x[:prof.n_train], y[:prof.n_train]
        tr, va = train_val_split(len(x))
    if cfg.variant.sphere_radius not in ("paper", "authors"):
        raise ValueError(f"unknown sphere_radius rule {cfg.variant.sphere_radius!r}; use paper or authors")
    radius = float(np.linalg.norm(all_x.reshape(len(all_x), -1), axis=1).max())
    radius += 2.0 if cfg.variant.sphere_radius == "authors" else 0.0
    t = torch.from_numpy
    return DataSetting(t(x[tr]), t(y[tr]), t(x[va]), t(y[va]), t(xt), t(yt), radius, ood_set_names(cfg, data_dir), info)


# Profile settings that change how a run is evaluated, not what it trains: a run directory written
# with another value of them resumes (its checkpoints stay valid).
EVALUATION_ONLY = ("eval_batch", "monitor")


def _comparable(d: dict) -> dict:
    """A stored or current config reduced to what must match for a run directory to resume: an option
    added later (of the run or of its variant) takes its default (the behaviour before it existed),
    options left at None count as absent, and evaluation-only profile settings do not count."""
    # a field added later takes its default (the behaviour before it existed) in configs written without it
    defaults = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
    d = {k: v for k, v in {**defaults, **json.loads(json.dumps(d))}.items()
         if v is not None and k not in ("device", "score_used", "score_paper")}
    if isinstance(d.get("variant"), dict):
        # the primary score decides only what is reported first: every rule is always evaluated
        d["variant"] = {k: v for k, v in asdict(Variant.from_dict(d["variant"])).items() if k != "score"}
    if isinstance(d.get("profile_settings"), dict):
        # a profile setting added later takes its default too (e.g. memory_format: contiguous before it existed)
        later = {f.name: f.default for f in fields(Profile) if f.default is not MISSING}
        d["profile_settings"] = {k: v for k, v in {**later, **d["profile_settings"]}.items() if k not in EVALUATION_ONLY}
    return d


def _check_config(out: Path, cfg: RunConfig, write: bool = True) -> None:
    """Refuse a run directory that holds another configuration; write ours there (``write``) if none."""
    path = out / "config.json"
    mine = _comparable(cfg.to_dict())
    if path.exists():
        try:
            theirs = _comparable(read_json_object(path))
        except (TypeError, AttributeError) as exc:
            raise RunError(f"{path}: not a configuration written by `oodgen run` ({first_line(exc)}); it is "
                           "damaged - use another --out or delete that directory") from None
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise RunError(f"{out} holds a run with a different configuration (differs in {diff}); "
                           "use another --out or delete that directory")
    elif write:
        try:
            atomic_write_json(path, cfg.to_dict(), exclusive=True)
        except FileExistsError:         # another run wrote one since the check above: compare with it
            _check_config(out, cfg, write=False)


def component_sample(n: int, seed: int, size: int | None = None) -> np.ndarray:
    """Boolean mask of the seeded sample of at most ``size`` (default :data:`N_COMPONENT_SAMPLE`) of
    ``n`` OOD images on which each image statistic's own AUROC is measured (all when ``n <= size``)."""
    size = N_COMPONENT_SAMPLE if size is None else int(size)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:size]] = True
    return mask


def _finished_run(out: Path, prof, plain: bool = True) -> dict | None:
    """The previous metrics.json when every training stage's checkpoint is complete, else None."""
    path = out / "metrics.json"
    if not path.exists():
        return None
    for name, stage in (("cvae", prof.cvae), ("nplus1", prof.classifier)) + ((("plain", prof.plain),) if plain else ()):
        ck = out / "checkpoints" / f"{name}.pt"
        if not ck.exists():
            return None
        try:
            if load_checkpoint(ck).get("epoch") != stage.epochs:
                return None
        except Exception:
            return None
    try:
        return read_json_object(path)
    except ValueError:
        return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_plain_classifier(cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, ckpt_path, device,
                           progress: bool = True, log=print) -> Fig6cCNN:
    """The plain n-class Fig. 6c CNN every post-hoc baseline scores (``checkpoints/plain.pt``): seeded
    with ``cfg.seed + 2`` right before it is built, trained with the profile's ``plain`` stage on the
    run's training split.  It depends on nothing else of the run, so ``oodgen bench --retrain-plain``
    trains the same network alone when a finished run's checkpoints are gone."""
    shape = tuple(int(v) for v in x.shape[1:])
    torch.manual_seed(cfg.seed + 2)
    plain = Fig6cCNN(int(y.max()) + 1, shape[0], shape[1:]).to(device)
    train_plain(plain, x.to(device), y.to(device), cfg.prof.plain, ckpt_path, cfg.seed, progress, log,
                memory_format=cfg.prof.memory_format)
    return plain


def run(cfg: RunConfig, out_dir, data_dir=None, progress: bool = True, log=print, strict: bool = False,
        precision: str = "fp32") -> dict:
    """Train (or resume) and evaluate one run; returns the metrics dict also written to disk.

    Load the data and check every input -> fit :class:`~oodgen.detectors.oodgen.OODGen` (and, for the
    built-in settings or with ``plain=True``, the plain classifier the baselines score) -> calibrate on the validation split and evaluate every rule -> save
    the detector (``detector.pt``) and the metrics.

    ``strict``: stop with :class:`~oodgen.generate.health.CollapsedCVAEError` when the trained
    CVAE fails its health check (otherwise a loud warning, and ``"collapsed": true`` recorded).
    ``precision``: the networks' precision during evaluation (``"fp32"``, ``"bf16"`` or ``"auto"``;
    :mod:`oodgen.models.inference`), recorded as ``metrics["precision"]``.

    Under torch.distributed (``torchrun ... -m oodgen run``; :mod:`oodgen.distributed`) every rank
    trains, rank 0 alone evaluates and writes the results; the other ranks return None."""
    dist = current_dist()
    if not dist.main:
        log, progress = (lambda _m: None), False
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg, write=False)      # a conflicting directory is refused before any data is read
    device, t_start = resolve_device(cfg.device), time.perf_counter()
    log(f"oodgen run: id={cfg.id} profile={cfg.profile} seed={cfg.seed} out={out}"
        + (f" ({dist.world} processes, {dist.describe()['backend']})" if dist.active else ""))
    data, latent = prepare(cfg, out, data_dir, dist, log)
    previous = _finished_run(out, cfg.prof, cfg.trains_plain)
    detector = OODGen(latent_dim=latent, profile=cfg.prof, variant=cfg.variant, score=cfg.score_rule,
                      seed=cfg.seed, checkpoint_dir=str(out / "checkpoints"), progress=progress, verbose=dist.main,
                      device=str(device), strict=strict, precision=precision).fit(data.x, data.y,
                                                                                 eval_set=(data.x_val, data.y_val))
    timings = dict(detector.timings_)
    plain = None
    if cfg.trains_plain:            # only the baselines (oodgen bench) score it
        t0 = time.perf_counter()
        plain = train_plain_classifier(cfg, data.x, data.y, out / "checkpoints" / "plain.pt", device, progress, log)
        timings["plain_training"] = time.perf_counter() - t0
    dist.barrier()          # the last collective step: rank 0 evaluates alone from here
    if not dist.main:
        return None
    t0 = time.perf_counter()
    # Beyond the paper: the fused rules and every threshold are calibrated on the validation split (no OOD data)
    detector.calibrate(data.x_val, x_train=data.x, y_train=data.y)
    results = evaluate(detector, plain, cfg, data, data_dir)
    timings["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results["generated_panel"] = panel_aurocs(detector, data, out / "checkpoints" / "panel.pt", cfg.seed,
                                              cfg.prof.eval_batch)
    timings["generated_panel"] = time.perf_counter() - t0
    detector.save(out, config=cfg.to_dict(), classes=data.info.get("classes"))
    timings["total"] = time.perf_counter() - t_start
    metrics = run_metrics(cfg, detector, data, results, timings, previous, device, precision, dist)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "results.md", markdown_table(metrics).encode())
    log(markdown_table(metrics))
    return metrics


def prepare(cfg: RunConfig, out: Path, data_dir, dist, log=print) -> tuple[DataSetting, int]:
    """(the run's data, the CVAE's latent size): every input read and checked before the first epoch
    (:mod:`oodgen.preflight` for your own data); the run directory's ``config.json`` is written only
    then, so a run refused here leaves nothing that blocks the corrected command."""
    data = load_setting(cfg, data_dir)
    latent = cfg.latent
    if cfg.train is not None:
        latent, data.user_ood, notes = check_user_run(cfg, _user_ood(cfg), (data.x, data.y), (data.x_val, data.y_val),
                                                      (data.x_test, data.y_test), data.info["classes"], data.shape, log)
        data.info.update(notes)
    if dist.main:
        _check_config(out, cfg)
    dist.barrier()
    if not dist.main:
        _check_config(out, cfg)        # reads rank 0's config.json: refuses a conflicting directory too
    log(data.describe())
    return data, latent


def evaluate(detector: OODGen, plain, cfg: RunConfig, data: DataSetting, data_dir=None) -> dict:
    """Every score rule of the calibrated ``detector`` (and each statistic of ``reject+fisher`` alone) on the
    test split against every OOD set, and both classifiers' test accuracy."""
    batch = cfg.prof.eval_batch
    scores_in = detector.score_all(data.x_test, components=True, batch_size=batch)
    components = ("feature-knn",) + STAT_NAMES
    by_score = {r: {} for r in SCORES}
    by_component: dict[str, dict] = {c: {} for c in components}
    sizes = {}
    for name in data.ood_names:
        ood = data.user_ood[name] if name in data.user_ood else load_ood_set(
            cfg, name, data_dir, n=cfg.prof.n_eval, seed=cfg.seed, sphere_radius=data.sphere_radius, shape=data.shape)
        sizes[name] = len(ood)
        sample = component_sample(len(ood), cfg.seed)     # the image statistics alone: on a sample
        scores_ood = detector.score_all(ood.images, components=sample, batch_size=batch)
        for rule in by_score:
            by_score[rule][name] = ood_metrics(scores_in[rule], scores_ood[rule])
        for c in components:
            by_component[c][name] = ood_metrics(scores_in[c], scores_ood[c] if c == "feature-knn" else scores_ood[c][sample])
    accuracy = float((torch.from_numpy(detector.predict_class(data.x_test)) == data.y_test).double().mean() * 100)
    out = {"by_score": by_score, "by_component": by_component, "sizes": sizes, "accuracy": accuracy}
    if plain is not None:
        logits_plain = predict_logits(inference_copy(plain), data.x_test, batch)
        out["accuracy_plain"] = float((logits_plain.argmax(1) == data.y_test).double().mean() * 100)
    return out


def panel_aurocs(detector: OODGen, data: DataSetting, cache: Path, seed: int, batch_size: int = 256) -> dict:
    """Model selection without test OOD data: the validation split against the fixed panel of generated
    outliers (:mod:`oodgen.generate.panel`), the same images for every variant sharing the CVAE."""
    scores_val = detector.calib_scores_
    auroc: dict[str, dict] = {r: {} for r in scores_val}
    for name, images in detector.generated_panel(data.x_val, data.y_val, seed, cache=cache).items():
        scores = detector.score_all(images, tuple(scores_val), batch_size=batch_size)
        for rule in auroc:
            auroc[rule][name] = ood_metrics(scores_val[rule], scores[rule])["auroc"]
    return {"auroc": auroc, "mean_auroc": {r: float(np.mean(list(v.values()))) for r, v in auroc.items()},
            "n_per_component": min(N_PANEL, len(data.x_val)),
            "note": "validation split vs generated outliers only (no test OOD set); oodgen.generate.panel"}


def run_metrics(cfg: RunConfig, detector: OODGen, data: DataSetting, results: dict, timings: dict,
                previous: dict | None, device, precision: str, dist) -> dict:
    """The ``metrics.json`` of a run (schema in the module docstring)."""
    reevaluated = None
    if previous is not None:
        # Every stage was restored from finished checkpoints: this call only re-evaluated.  Keep
        # the training run's own cost record and say when and with which code it was re-scored.
        reevaluated = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "git_revision": environment().get("git_revision"),
                       "evaluation_s": timings["evaluation"]}
        timings = dict(previous.get("timings_s", timings))
    primary = cfg.score_rule
    return {
        "id": cfg.id,
        **({"data": data.info} if data.info else {}),
        "method": "oodgen",
        "seed": cfg.seed,
        "profile": cfg.profile,
        "variant": cfg.to_dict()["variant"],
        "score": primary,
        "score_option": cfg.variant.score,
        "score_paper": cfg.paper_rule,
        "accuracy": results["accuracy"],
        **({"accuracy_plain": results["accuracy_plain"]} if "accuracy_plain" in results else {}),
        "cvae_health": detector.cvae_health_,
        "generated_panel": results["generated_panel"],
        # per epoch: loss and seconds; the n+1 classifier's "monitor" (profiles with monitor on): validation
        # accuracy and p(n+1)'s AUROC against the generated panel, no test data
        "training_history": {"cvae": detector.cvae_history_, "nplus1": detector.classifier_history_},
        "ood": results["by_score"][primary],
        "ood_by_score": results["by_score"],
        "fisher_components": results["by_component"],
        "fisher_components_note": (f"each statistic of reject+fisher alone; the image statistics on a seeded sample "
                                   f"of {N_COMPONENT_SAMPLE} images of each OOD set (run.component_sample), "
                                   f"feature-knn on all"),
        "n_test_in": len(data.x_test),
        "n_ood": results["sizes"],
        "sphere_radius": data.sphere_radius,
        "threshold_95tpr": detector.thresholds_[primary],
        "timings_s": timings,
        "device": str(device),
        "precision": resolve_precision(precision, device),
        "distributed": dist.describe(),
        "peak_rss_mb": peak_rss_mb() if previous is None else max(peak_rss_mb(), previous.get("peak_rss_mb", 0.0)),
        "reevaluated": reevaluated,
        "config": cfg.to_dict(),
        "environment": environment(),
        "metrics_note": "percent; in-distribution positive; scores higher = more OOD",
    }
