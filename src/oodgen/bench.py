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
4. the confident classifier trains its own classifier + GAN in ``DIR/<id>/confident/seed<k>``
   (resumable);
5. each method writes ``DIR/<id>/<method>/seed<k>/metrics.json`` (the schema of
   ``oodgen run``'s metrics.json); a method whose metrics.json exists is skipped.

Finally ``DIR/tables/table1.{md,csv,json}`` (Ours / confident / ODIN / MD),
``table2.*`` (max-softmax / MC-dropout / mutual information) and ``extra.*`` (energy,
max-logit, KNN, ViM) aggregate every cell as mean ± std over seeds beside the paper's number
(:file:`paper_tables.json`).  In-distribution images for every method are the setting's test
split; the in-distribution validation split is the one ``oodgen run`` holds out.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .artifact import read_detector
from .config import PROFILES, RunConfig
from .detectors.confident import ConfidentClassifier
from .detectors.mahalanobis import MAHALANOBIS_EPSILONS, mahalanobis_grid_scores, select_mahalanobis
from .detectors.mc_dropout import mc_dropout_moments
from .detectors.odin import ODIN_EPSILONS, ODIN_TEMPERATURES, odin_grid_scores, select_odin
from .detectors.posthoc import model_outputs
from .detectors.base import BenchInfo
from .detectors.registry import DETECTORS, make_detector
from .metrics import ood_metrics
from .models import CVAE, Fig6cCNN, as_inference
from .train import load_checkpoint
from .utils import atomic_write_bytes, atomic_write_json, derive_seed, environment, generator, resolve_device

SETTINGS = ("mnist", "fmnist", "mnist0-4", "fmnist0-4")
OURS = {"oodgen": "Ours", "oodgen+knn": "Ours+KNN", "oodgen+reject": "Ours reject+KNN",
        "oodgen+fisher": "Ours reject+Fisher"}   # our rows of Table 1 (the derived ones: DERIVED below)
TABLE_TITLES = {"table1": "Table 1: Ours / Confident classifier / ODIN / Mahalanobis",
                "table2": "Table 2: max-softmax / MC-dropout / mutual information",
                "extra": "Extra baselines (not in the paper)"}


# Everything below is read from the registry (each detector class's BenchInfo) when it is
# called, so a newly registered detector is benchmarked and tabled with no edit here.
def _infos() -> dict[str, BenchInfo]:
    return {name: cls.bench_info for name, cls in DETECTORS.items() if getattr(cls, "bench_info", None)}


def _info(method: str) -> BenchInfo:
    return _infos()[method.removesuffix("-fair")]


def methods_by(consumes: str) -> tuple[str, ...]:
    """Bench methods whose detector consumes ``consumes`` (with the -fair variants of tuned ones)."""
    out = [n for n, i in _infos().items() if i.consumes == consumes]
    if consumes == "tuned":
        out += [f"{n}-fair" for n, i in _infos().items() if i.consumes == "tuned" and i.fair_variant]
    return tuple(out)


def all_methods() -> tuple[str, ...]:
    """Every method ``oodgen bench`` knows, in table order: ours, then each table's baselines."""
    out = ["oodgen"]
    for table in TABLE_TITLES:
        names = [n for n, i in _infos().items() if i.table == table]
        out += names + [f"{n}-fair" for n in names if _infos()[n].fair_variant]
    return tuple(out)


def default_methods() -> tuple[str, ...]:
    return tuple(m for m in all_methods() if not m.endswith("-fair"))


def bench_tables() -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for table, title in TABLE_TITLES.items():
        rows = [m for m in all_methods() if m != "oodgen" and _info(m).table == table]
        out[table] = (title, (tuple(OURS) if table == "table1" else ()) + tuple(rows))
    return out


def display(method: str) -> str:
    if method in OURS:
        return OURS[method]
    if method.removesuffix("-fair") not in _infos():
        return method           # e.g. "plain" (the plain classifier's accuracy)
    return _info(method).display + (" (fair)" if method.endswith("-fair") else "")


def score_used(method: str) -> str:
    return _info(method).score


# Import-time snapshots for readers of the module (the bench itself calls the functions above).
METHODS = all_methods()
DEFAULT_METHODS = default_methods()
TABLES = bench_tables()
DISPLAY = {m: display(m) for m in (*OURS, *METHODS[1:])}
TABLE_METRICS = ("fpr95", "detection_error", "auroc", "aupr_out", "aupr_in")   # the paper's column order
METRIC_LABELS = {"fpr95": "FPR95 ↓", "detection_error": "Det. err ↓", "auroc": "AUROC ↑",
                 "aupr_out": "AUPR-out ↑", "aupr_in": "AUPR-in ↑"}
#: Epochs of the confident classifier per training profile (the reference code trains 100).
CONFIDENT_EPOCHS = {"smoke": 1, "quick": 2, "full": 10, "paper": 100}
N_TUNE = 1000                 # held-out images per tuning set (the ODIN protocol)
OUTPUTS_FORMAT = "oodgen-plain-outputs/1"


class BenchError(RuntimeError):
    """A benchmark cannot run (a run directory holds another configuration, ...)."""


def paper_tables() -> dict:
    """The paper's Tables 1 and 2 (see ``paper_tables.json`` for the transcription notes)."""
    return json.loads(resources.files("oodgen").joinpath("paper_tables.json").read_text())


# ---------------------------------------------------------------------------------------------
# one setting and seed
# ---------------------------------------------------------------------------------------------
class _Context:
    """Everything the baselines of one (setting, seed) share, loaded lazily."""

    def __init__(self, cfg: RunConfig, run_dir: Path, data_dir, mc_passes: int, log):
        from .run import load_setting
        self.cfg, self.run_dir, self.data_dir, self.mc_passes, self.log = cfg, run_dir, data_dir, mc_passes, log
        prof = cfg.prof
        x, y, xv, yv, xt, yt, radius = load_setting(cfg, data_dir)
        self.images = {"train": x, "val": xv, "test": xt}
        self.labels = {"train": y, "val": yv, "test": yt}
        self.ood_names = D.ood_sets(cfg.id, data_dir)
        for name in self.ood_names:
            ood = D.load(name, "test", data_dir, n=prof.n_eval, seed=cfg.seed, sphere_radius=radius)
            self.images[name] = torch.from_numpy(ood.images)
        self.n_classes = int(y.max()) + 1
        self.device = resolve_device(cfg.device)
        self._plain = None
        self._plain_sha = None
        self._outputs = None
        self._mc = None

    def _load_plain(self) -> None:
        # Loaded on first use: the confident classifier trains its own model and needs none.
        plain_path = self.run_dir / "checkpoints" / "plain.pt"
        if not plain_path.exists():
            raise BenchError(f"{plain_path} is missing: the run in {self.run_dir} did not train its plain "
                             "classifier (its checkpoints are not in git: rerun `oodgen run` for it)")
        self._plain_sha = hashlib.sha256(plain_path.read_bytes()).hexdigest()
        state = load_checkpoint(plain_path)
        model = Fig6cCNN(self.n_classes)
        model.load_state_dict(state["model"])
        self._plain = as_inference(model.to(self.device))     # eval, channels-last: faster scoring

    @property
    def plain(self) -> Fig6cCNN:
        """The run's plain n-class classifier, the one every post-hoc baseline scores."""
        if self._plain is None:
            self._load_plain()
        return self._plain

    @property
    def plain_sha(self) -> str:
        if self._plain_sha is None:
            self._load_plain()
        return self._plain_sha

    def outputs(self) -> dict[str, dict[str, np.ndarray]]:
        """Cached features and logits of the plain classifier for every image set."""
        if self._outputs is None:
            path = self.run_dir / "plain_outputs.npz"
            sizes = {k: len(v) for k, v in self.images.items()}
            meta = {"format": OUTPUTS_FORMAT, "plain_sha256": self.plain_sha, "sizes": sizes}
            cached = _read_npz(path, meta)
            if cached is None:
                self.log(f"caching plain-classifier outputs in {path}")
                cached = {}
                for name, x in self.images.items():
                    for key, arr in model_outputs(self.plain, x, ("features", "logits")).items():
                        cached[f"{name}__{key}"] = arr
                _write_npz(path, meta, cached)
            self._outputs = {name: {k: cached[f"{name}__{k}"] for k in ("features", "logits")}
                             for name in self.images}
        return self._outputs

    def mc(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Cached MC-dropout (mean softmax, mean entropy) for the test and OOD sets."""
        if self._mc is None:
            path = self.run_dir / "plain_mc.npz"
            names = ["test"] + self.ood_names
            meta = {"format": OUTPUTS_FORMAT, "plain_sha256": self.plain_sha, "n_passes": self.mc_passes,
                    "seed": self.cfg.seed, "sizes": {k: len(self.images[k]) for k in names}}
            cached = _read_npz(path, meta)
            if cached is None:
                self.log(f"MC-dropout: {self.mc_passes} passes over {len(names)} sets, cached in {path}")
                cached = {}
                for name in names:
                    p, h = mc_dropout_moments(self.plain, self.images[name], self.mc_passes,
                                              derive_seed(self.cfg.seed, "mc-dropout", name))
                    cached[f"{name}__mean_p"], cached[f"{name}__mean_entropy"] = p, h
                _write_npz(path, meta, cached)
            self._mc = {k: (cached[f"{k}__mean_p"], cached[f"{k}__mean_entropy"]) for k in names}
        return self._mc

    def accuracy_plain(self) -> float:
        logits = self.outputs()["test"]["logits"]
        return float((logits.argmax(1) == self.labels["test"].numpy()).mean() * 100)

    def fair_outliers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(in-distribution validation images, outliers) for the ``fair`` tuning protocol:
        half uniform noise, half Type I perturbations of the validation images made with the
        run's own CVAE (what the paper's method sees; nothing of the test OOD sets)."""
        from .generate import off_manifold_samples
        xv, yv = self.images["val"][:N_TUNE], self.labels["val"][:N_TUNE]
        n_noise = len(xv) // 2
        noise = torch.from_numpy(D.synthetic("uniform", max(1, n_noise), derive_seed(self.cfg.seed, "fair-noise")))
        _path, state = read_detector(self.run_dir)
        cvae = CVAE.for_variant(self.n_classes, self.cfg.latent, self.cfg.variant)
        cvae.load_state_dict(state["cvae"])
        cvae.eval()
        type1 = off_manifold_samples(cvae, xv[n_noise:], yv[n_noise:], beta=self.cfg.variant.beta_range(),
                                     nullspace=self.cfg.variant.nullspace,
                                     generator=generator(self.cfg.seed, "fair-type1"),
                                     clip=self.cfg.variant.clip_mode())
        return xv, torch.cat([noise, type1])


def _read_npz(path: Path, meta: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != json.loads(json.dumps(meta)):
                return None
            return {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError):
        return None        # unreadable or stale: recompute


def _write_npz(path: Path, meta: dict, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _split_tuning(n: int) -> int:
    """Images of an OOD set held out for tuning: 1,000 as in ODIN, at most half the set."""
    return max(1, min(N_TUNE, n // 2))


def _evaluate(ctx: _Context, method: str, confident_epochs: int, log) -> dict:
    """Scores of one method: returns ood metrics, sizes, accuracy, tuning record, params."""
    names = ctx.ood_names
    ood, sizes, tuning, params = {}, {}, None, {}
    accuracy = None
    if method not in all_methods():
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(all_methods())}")
    kind = _info(method).consumes
    if kind == "outputs":
        outs = ctx.outputs()
        det = make_detector(method, ctx.plain).fit_outputs(**outs["train"], y=ctx.labels["train"].numpy())
        s_in = det.score_outputs(**outs["test"])
        for name in names:
            ood[name] = ood_metrics(s_in, det.score_outputs(**outs[name]))
            sizes[name] = len(ctx.images[name])
        params = _params(det)
    elif kind == "mc":
        mc = ctx.mc()

        def score(key):
            return DETECTORS[method].from_moments(*mc[key])
        s_in = score("test")
        for name in names:
            ood[name] = ood_metrics(s_in, score(name))
            sizes[name] = len(ctx.images[name])
        params = {"n_passes": ctx.mc_passes, "score": "entropy" if method == "mc-dropout" else method,
                  "seed": f"derive_seed({ctx.cfg.seed}, 'mc-dropout', <set>)"}
    elif kind == "tuned":
        ood, sizes, tuning, params = _evaluate_tuned(ctx, method, log)
    elif kind == "images":
        det = DETECTORS[method].for_bench(ctx.cfg.seed).fit(ctx.images["train"])
        ood, sizes = _score_images(ctx, det)
        params = _params(det)
    elif kind == "trains" and method == "confident":
        out_dir = ctx.run_dir.parent.parent / "confident" / f"seed{ctx.cfg.seed}"
        det = ConfidentClassifier(beta=1.0, epochs=confident_epochs, seed=ctx.cfg.seed,
                                  device=str(ctx.device), checkpoint_path=str(out_dir / "checkpoints" / "confident.pt"),
                                  verbose=True)
        atomic_write_json(out_dir / "config.json", {"run_config": ctx.cfg.to_dict(), "params": _params(det)})
        det.fit(ctx.images["train"], ctx.labels["train"])
        ood, sizes = _score_images(ctx, det)
        accuracy = float((det.predict(ctx.images["test"]) == ctx.labels["test"].numpy()).mean() * 100)
        params = _params(det)
        params["history"] = det.history_
    else:
        raise ValueError(f"bench: no protocol for {method!r} (consumes {kind!r})")
    if accuracy is None and not _info(method).classifier_free:
        accuracy = ctx.accuracy_plain()
    return {"ood": ood, "n_ood": sizes, "tuning": tuning, "hyper_parameters": params, "accuracy": accuracy}


def _score_images(ctx: _Context, det) -> tuple[dict, dict]:
    """OOD metrics and set sizes of a fitted detector that scores images (test vs every OOD set)."""
    s_in = det.score(ctx.images["test"])
    ood = {name: ood_metrics(s_in, det.score(ctx.images[name])) for name in ctx.ood_names}
    return ood, {name: len(ctx.images[name]) for name in ctx.ood_names}


def _params(det) -> dict:
    out = {}
    for k, v in det.get_params().items():
        if k in ("model", "head") or callable(v):
            continue
        out[k] = v
    return out


def _evaluate_tuned(ctx: _Context, method: str, log):
    base, fair = method.removesuffix("-fair"), method.endswith("-fair")
    names = ctx.ood_names
    if base == "odin":
        def grid(x):
            return odin_grid_scores(ctx.plain, x, ODIN_TEMPERATURES, ODIN_EPSILONS)

        def select(g_in, g_out):
            return select_odin(g_in, g_out, ODIN_TEMPERATURES, ODIN_EPSILONS)

        def scores(choice, x):
            return odin_grid_scores(ctx.plain, x, [choice["temperature"]], [choice["eps"]])[0, 0]
        keys, params = ("temperature", "eps"), {"grid_T": list(ODIN_TEMPERATURES), "grid_eps": list(ODIN_EPSILONS)}
    else:
        det = make_detector("mahalanobis", ctx.plain).fit_outputs(
            features=ctx.outputs()["train"]["features"], y=ctx.labels["train"].numpy())

        def grid(x):
            return mahalanobis_grid_scores(det, x, MAHALANOBIS_EPSILONS)

        def select(g_in, g_out):
            return select_mahalanobis(g_in, g_out, MAHALANOBIS_EPSILONS)

        def scores(choice, x):
            return mahalanobis_grid_scores(det, x, [choice["eps"]])[0]
        keys, params = ("eps",), {"grid_eps": list(MAHALANOBIS_EPSILONS), "features": "penultimate (Dense-128)"}

    in_cache: dict[tuple, np.ndarray] = {}

    def scores_in(choice):
        key = tuple(choice[k] for k in keys)
        if key not in in_cache:
            in_cache[key] = scores(choice, ctx.images["test"])
        return in_cache[key]

    ood, sizes, chosen = {}, {}, {}
    if fair:
        x_in, x_out = ctx.fair_outliers()
        choice = select(grid(x_in), grid(x_out))
        log(f"[{method}] tuned on {len(x_in)} validation vs {len(x_out)} noise + Type I images: "
            + ", ".join(f"{k}={choice[k]}" for k in keys))
        for name in names:
            ood[name] = ood_metrics(scores_in(choice), scores(choice, ctx.images[name]))
            sizes[name] = len(ctx.images[name])
        tuning = {"mode": "fair", "criterion": choice["criterion"], "n_tune_in": len(x_in),
                  "tune_out": f"{len(x_out)} images: uniform noise + Type I outliers of validation images",
                  "chosen": {k: choice[k] for k in keys},
                  "validation": {"fpr95": choice["fpr95"], "auroc": choice["auroc"]}}
        return ood, sizes, tuning, params
    x_in = ctx.images["val"][:N_TUNE]
    g_in = grid(x_in)
    for name in names:
        x = ctx.images[name]
        n_tune = _split_tuning(len(x))
        choice = select(g_in, grid(x[:n_tune]))
        ood[name] = ood_metrics(scores_in(choice), scores(choice, x[n_tune:]))
        sizes[name] = len(x) - n_tune
        chosen[name] = {**{k: choice[k] for k in keys}, "n_tune_out": n_tune,
                        "validation_fpr95": choice["fpr95"], "validation_auroc": choice["auroc"]}
        log(f"[{method}] {name}: " + ", ".join(f"{k}={choice[k]}" for k in keys))
    tuning = {"mode": "test-ood", "criterion": "lowest FPR at 95% TPR, ties: higher AUROC",
              "n_tune_in": len(x_in), "tune_in": "in-distribution validation split",
              "tune_out": "first images of each test OOD set, excluded from its evaluation",
              "chosen": chosen}
    return ood, sizes, tuning, params


def _run_dir_config(run_dir: Path, setting: str, seed: int, profile: str, device: str) -> RunConfig:
    path = run_dir / "config.json"
    if not path.exists():
        return RunConfig(id=setting, seed=seed, profile=profile, device=device)
    cfg = RunConfig.from_dict(json.loads(path.read_text()))
    if (cfg.id, cfg.seed, cfg.profile) != (setting, seed, profile):
        raise BenchError(f"{run_dir} holds a run of id={cfg.id} seed={cfg.seed} profile={cfg.profile}, "
                         f"not id={setting} seed={seed} profile={profile}; use another --out")
    # The device is this call's, not the stored run's: a run trained with --device cuda is
    # benchmarked on a CPU-only machine too (the device is not part of a run's identity).
    return dataclasses.replace(cfg, device=device)


def bench_one(setting: str, seed: int, methods, profile: str, out, data_dir=None, device: str = "auto",
              mc_passes: int = 50, confident_epochs: int | None = None, progress: bool = False, log=print) -> None:
    """Run (or resume) every method of one setting and seed; writes the per-method metrics.json."""
    from .run import run
    out = Path(out)
    run_dir = out / setting / "oodgen" / f"seed{seed}"
    cfg = _run_dir_config(run_dir, setting, seed, profile, device)
    if not (run_dir / "metrics.json").exists():
        run(cfg, run_dir, data_dir, progress=progress, log=log)
    pending = [m for m in methods
               if m != "oodgen" and not (out / setting / m / f"seed{seed}" / "metrics.json").exists()]
    if not pending:
        return
    if confident_epochs is None:
        confident_epochs = CONFIDENT_EPOCHS.get(profile, 10)
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
            "classifier": ("its own, trained jointly with a GAN" if method == "confident"
                           else "none (pixel space)" if _info(method).classifier_free
                           else f"the plain n-class Fig. 6c CNN of {run_dir / 'checkpoints' / 'plain.pt'}"),
            "timings_s": {"total": time.perf_counter() - t0},
            "config": {**cfg.to_dict(), "bench": {"mc_passes": mc_passes, "confident_epochs": confident_epochs,
                                                  "n_tune": N_TUNE}},
            "environment": environment(),
            "metrics_note": "percent; in-distribution positive; scores higher = more OOD",
        }
        atomic_write_json(out / setting / method / f"seed{seed}" / "metrics.json", metrics)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr)}


#: Table columns computed from another method's runs: (source method, its score rule).
DERIVED = {"oodgen+knn": ("oodgen", "ood-class+knn"), "oodgen+reject": ("oodgen", "reject+knn"),
           "oodgen+fisher": ("oodgen", "reject+fisher")}


def _load_metrics(out: Path, setting: str, method: str, seeds) -> list[dict]:
    source, rule = DERIVED.get(method, (method, None))
    paths = [out / setting / source / f"seed{s}" / "metrics.json" for s in seeds]
    runs = [json.loads(p.read_text()) for p in paths if p.exists()]
    if rule is None:
        return runs
    # The same trained n+1 classifier scored by another rule (recorded by `oodgen run`).
    return [{**r, "method": method, "score": rule, "ood": r["ood_by_score"][rule]}
            for r in runs if rule in r.get("ood_by_score", {})]


def _write_summary(out: Path, settings, seeds) -> dict:
    """Mean AUROC over every OOD set of a setting, per method (seeds averaged first)."""
    methods = [m for _t, (_title, ms) in bench_tables().items() for m in ms]
    doc = {"title": "Mean AUROC over the OOD sets of each setting", "seeds": list(seeds), "settings": {}}
    lines = ["# Mean AUROC over the OOD sets of each setting", "",
             f"Each cell: AUROC averaged over seeds (those of {list(seeds)} that ran), then over the OOD sets; "
             "the best of each setting in bold; n = seeds.  Methods whose runs miss an OOD set are left out.", ""]
    for setting in settings:
        row = {}
        for m in methods:
            runs = _load_metrics(out, setting, m, seeds)
            if not runs:
                continue
            names = set(runs[0]["ood"])
            if any(set(r["ood"]) != names for r in runs):
                continue
            # sorted: a set's order changes between processes, and with it the sum's last digit
            row[m] = {"mean_auroc": float(np.mean([np.mean([r["ood"][n]["auroc"] for r in runs]) for n in sorted(names)])),
                      "n": len(runs), "ood_sets": sorted(names)}
        if not row:
            continue
        doc["settings"][setting] = row
        best = max(v["mean_auroc"] for v in row.values())
        lines += [f"## {setting}", "", "| method | mean AUROC | n |", "|---|---|---|"]
        for m, v in sorted(row.items(), key=lambda kv: -kv[1]["mean_auroc"]):
            cell = f"{v['mean_auroc']:.2f}"
            lines.append(f"| {display(m)} | {'**' + cell + '**' if v['mean_auroc'] == best else cell} | {v['n']} |")
        lines.append("")
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "summary.md", "\n".join(lines).encode())
    atomic_write_json(folder / "summary.json", doc)
    return doc


def build_tables(out, settings=SETTINGS, seeds=(0, 1, 2)) -> dict:
    """Aggregate the per-method metrics.json files into ``DIR/tables/{table1,table2,extra}.*``."""
    out = Path(out)
    paper = paper_tables()
    tables = {}
    for table, (title, methods) in bench_tables().items():
        paper_key = table if table in ("table1", "table2") else None
        doc = {"table": table, "title": title, "methods": [], "metrics": list(TABLE_METRICS), "seeds": list(seeds),
               "settings": {}, "cell": "mean and sample std over seeds (percent); paper = the paper's value",
               "paper_source": paper["source"] if paper_key else None}
        present = set()
        for setting in settings:
            runs = {m: r for m in methods if (r := _load_metrics(out, setting, m, seeds))}
            if not runs:
                continue
            present.update(runs)
            ptab = paper[paper_key]["results"].get(setting, {}) if paper_key else {}
            ood_names = list(ptab) + sorted({n for r in runs.values() for m in r for n in m["ood"]} - set(ptab))
            rows = {}
            for name in ood_names:
                rows[name] = {}
                for metric in TABLE_METRICS:
                    cells = {}
                    for m in methods:
                        vals = [r["ood"][name][metric] for r in runs.get(m, []) if name in r["ood"]]
                        p = ptab.get(name, {}).get(metric, {}).get(m)
                        if vals or p is not None:
                            cells[m] = {**(_stats(vals) if vals else {"mean": None, "std": None, "n": 0}),
                                        "seeds": [r["seed"] for r in runs.get(m, []) if name in r["ood"]],
                                        "paper": p}
                    rows[name][metric] = cells
            acc = {m: _stats([r["accuracy"] for r in rs]) for m, rs in runs.items()
                   if rs and all(r.get("accuracy") is not None for r in rs)}   # not CLASSIFIER_FREE ones
            plain = [r["accuracy_plain"] for r in runs.get("oodgen", []) if "accuracy_plain" in r]
            if plain:
                acc["plain"] = _stats(plain)
            doc["settings"][setting] = {
                "accuracy": acc,
                "paper_accuracy": paper["table1"]["accuracy"].get(setting) if table == "table1" else None,
                "rows": rows}
        doc["methods"] = [m for m in methods if m in present or (paper_key and m in paper[paper_key]["methods"])]
        tables[table] = doc
        _write_table(out / "tables", table, doc, paper)
    tables["summary"] = _write_summary(out, settings, seeds)
    tables["deviations"] = _write_deviations(out / "tables", tables)
    return tables


def _write_deviations(folder: Path, tables: dict, limit: float = 5.0) -> dict:
    """Every AUROC cell more than ``limit`` points from the paper's value, for the README to explain."""
    rows = []
    for table in ("table1", "table2"):
        for setting, sdoc in tables[table]["settings"].items():
            for name, metrics in sdoc["rows"].items():
                for m, c in metrics.get("auroc", {}).items():
                    if c.get("mean") is not None and c.get("paper") is not None and abs(c["mean"] - c["paper"]) > limit:
                        rows.append({"table": table, "setting": setting, "ood": name, "method": m,
                                     "ours": c["mean"], "paper": c["paper"], "diff": c["mean"] - c["paper"], "n": c["n"]})
    lines = [f"# AUROC cells more than {limit:g} points from the paper", "",
             "Generated by `oodgen bench`; README section \"Baselines and the benchmark\" explains the causes.", "",
             "| table | setting | OOD set | method | ours | paper | ours - paper | n |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['table']} | {r['setting']} | {r['ood']} | {display(r['method'])} | {r['ours']:.1f} "
              f"| {r['paper']} | {r['diff']:+.1f} | {r['n']} |" for r in rows]
    doc = {"limit": limit, "metric": "auroc", "cells": rows}
    atomic_write_bytes(folder / "deviations.md", ("\n".join(lines) + "\n").encode())
    atomic_write_json(folder / "deviations.json", doc)
    return doc


def _mean_std(cell: dict, digits: int) -> str:
    text = f"{cell['mean']:.{digits}f}"
    return text + (f" ± {cell['std']:.{digits}f}" if cell["std"] is not None else "")


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "–"
    ours = "–" if cell["mean"] is None else _mean_std(cell, 1)
    return ours + (f" ({cell['paper']})" if cell.get("paper") is not None else "")


def _report_links(folder: Path, setting: str, seeds) -> list[str]:
    """Links from a table to the per-run reports (`oodgen report DIR`) that exist for a setting."""
    links = [f"[seed {s}](../{setting}/oodgen/seed{s}/report.md)" for s in seeds
             if (folder.parent / setting / "oodgen" / f"seed{s}" / "report.md").exists()]
    return [f"Reports of our runs (ROC curves, score histograms, samples): {', '.join(links)}", ""] if links else []


def _write_table(folder: Path, table: str, doc: dict, paper: dict) -> None:
    methods = doc["methods"]
    names = {**paper["ood_names"], "kmnist": "KMNIST"}
    lines = [f"# {doc['title']}", "",
             f"Cells: ours mean ± std over those of seeds {doc['seeds']} that have results (a cell without "
             "± has one seed; the CSV/JSON give n per cell), the paper's value in brackets, percent; "
             "– = not run.", ""]
    rows_csv = []
    for setting, sdoc in doc["settings"].items():
        acc = sdoc["accuracy"]
        acc_txt = "; ".join(f"{display(m)} {_mean_std(a, 2)}" for m, a in acc.items() if a["n"])
        lines += [f"## {paper['setting_names'].get(setting, setting)}", "", f"Test accuracy: {acc_txt}"
                  + (f" (paper: plain {sdoc['paper_accuracy']['plain']}, ours {sdoc['paper_accuracy']['oodgen']})"
                     if sdoc.get("paper_accuracy") else ""), "",
                  *_report_links(folder, setting, doc["seeds"]),
                  "| OOD set | metric | " + " | ".join(display(m) for m in methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for name, metrics in sdoc["rows"].items():
            for metric, cells in metrics.items():
                lines.append(f"| {names.get(name, name)} | {METRIC_LABELS[metric]} | "
                             + " | ".join(_fmt(cells.get(m)) for m in methods) + " |")
                for m in methods:
                    c = cells.get(m)
                    if c:
                        rows_csv.append([setting, name, metric, m, c["mean"], c["std"], c["n"], c["paper"]])
        lines.append("")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / f"{table}.md", "\n".join(lines).encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["setting", "ood", "metric", "method", "mean", "std", "n_seeds", "paper"])
    for r in rows_csv:
        w.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in r])
    atomic_write_bytes(folder / f"{table}.csv", buf.getvalue().encode())
    atomic_write_json(folder / f"{table}.json", doc)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def bench(settings, methods, seeds, profile: str, out, data_dir=None, device: str = "auto", mc_passes: int = 50,
          confident_epochs: int | None = None, progress: bool = False, log=print) -> dict:
    """Every (setting, seed, method), then the tables; returns the tables' JSON documents."""
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; use any of {', '.join(all_methods())}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(PROFILES)}")
    for setting in settings:
        for seed in seeds:
            bench_one(setting, seed, methods, profile, out, data_dir, device, mc_passes, confident_epochs,
                      progress, log)
    return build_tables(out, settings, seeds)


def _main(a: argparse.Namespace) -> int:
    from .detectors.base import InputError
    from .run import RunError
    settings = SETTINGS if a.id == "all" else (a.id,)
    try:
        if a.tables_only:
            build_tables(a.out, settings, a.seeds)
        elif a.executor == "ray":
            from .executors import ExecutorError, bench_ray
            try:
                rep = bench_ray(settings, a.methods, a.seeds, a.profile, a.out, a.data_dir, a.device, a.mc_passes,
                                a.confident_epochs, address=a.address, cpus_per_job=a.cpus_per_job,
                                gpus_per_job=a.gpus_per_job)
            except ExecutorError as exc:
                print(f"oodgen bench: error: {exc}", file=sys.stderr)
                return 2
            build_tables(a.out, settings, a.seeds)
            print(f"[ray] {len(rep.ran)} job(s) ran, {len(rep.skipped)} skipped (finished before), "
                  f"{len(rep.failed)} failed, {rep.wall_s:.0f} s")
            if rep.failed:
                for key, err in rep.failed.items():
                    print(f"oodgen bench: job {key} failed: {err}", file=sys.stderr)
                return 1
        else:
            bench(settings, a.methods, a.seeds, a.profile, a.out, a.data_dir, a.device, a.mc_passes,
                  a.confident_epochs, progress=not a.no_progress)
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
    b.set_defaults(func=_main)
    return b
