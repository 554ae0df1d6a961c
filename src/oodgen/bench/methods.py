"""How the bench evaluates a method on one (setting, seed): the trained run's data, models and cached
plain-classifier outputs (:class:`Context`), and each method's evaluation on them (:func:`evaluate`; ODIN and
Mahalanobis through their two tuning protocols, :func:`_evaluate_tuned`).  Which methods there are and
how they are named is :mod:`oodgen.bench.tables` (read from the registry); one (setting, seed) run job by
job is :func:`oodgen.bench.core.bench_one`.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from .. import data as D
from ..artifact import read_detector
from ..config import RunConfig
from ..detectors.mc_dropout import mc_dropout_moments
from ..detectors.posthoc import grid_points, model_outputs, select_point
from ..detectors.registry import DETECTORS, make_detector
from ..metrics import ood_metrics
from ..models import CVAE, Fig6cCNN, as_inference
from ..train import load_checkpoint
from ..utils import atomic_write_bytes, atomic_write_json, derive_seed, generator, resolve_device
from .jobs import BenchError
from .tables import all_methods, method_info

#: Epochs of the confident classifier per training profile (the reference code trains 100).
CONFIDENT_EPOCHS = {"smoke": 1, "quick": 2, "full": 10, "paper": 100}
N_TUNE = 1000                 # held-out images per tuning set (the ODIN protocol)
OUTPUTS_FORMAT = "oodgen-plain-outputs/1"


def needs_plain(method: str) -> bool:
    """Whether ``method`` scores the run's plain classifier (not a baseline that trains its own
    classifier, nor a pixel-space method)."""
    info = method_info(method)
    return not (info.consumes == "trains" or info.classifier_free)


# ---------------------------------------------------------------------------------------------
# one setting and seed
# ---------------------------------------------------------------------------------------------
class Context:
    """Everything the baselines of one (setting, seed) share, loaded lazily."""

    def __init__(self, cfg: RunConfig, run_dir: Path, data_dir, mc_passes: int, log):
        from ..run import load_setting
        self.cfg, self.run_dir, self.data_dir, self.mc_passes, self.log = cfg, run_dir, data_dir, mc_passes, log
        prof = cfg.prof
        data = load_setting(cfg, data_dir)
        self.images = {"train": data.x, "val": data.x_val, "test": data.x_test}
        self.labels = {"train": data.y, "val": data.y_val, "test": data.y_test}
        self.ood_names = data.ood_names
        for name in self.ood_names:
            ood = D.load(name, "test", data_dir, n=prof.n_eval, seed=cfg.seed, sphere_radius=data.sphere_radius)
            self.images[name] = torch.from_numpy(ood.images)
        self.n_classes = data.n_classes
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
                             "classifier (its checkpoints are not in git): rerun `oodgen run` for it, or pass "
                             "`oodgen bench --retrain-plain` to train that plain classifier alone")
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
        from ..generate import off_manifold_samples
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


def evaluate(ctx: Context, method: str, folder: Path, confident_epochs: int, log) -> dict:
    """Scores of one method: returns ood metrics, sizes, accuracy, tuning record, params.  ``folder``: the
    method's job folder (a method that trains its own classifier keeps its checkpoints there)."""
    names = ctx.ood_names
    ood, sizes, tuning, params = {}, {}, None, {}
    accuracy = None
    if method not in all_methods():
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(all_methods())}")
    kind = method_info(method).consumes
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
        params = {"n_passes": ctx.mc_passes, "score": getattr(DETECTORS[method], "mc_score", method),
                  "seed": f"derive_seed({ctx.cfg.seed}, 'mc-dropout', <set>)"}
    elif kind == "tuned":
        ood, sizes, tuning, params = _evaluate_tuned(ctx, method, log)
    elif kind == "images":
        det = DETECTORS[method].for_bench(ctx.cfg.seed).fit(ctx.images["train"])
        ood, sizes = _score_images(ctx, det)
        params = _params(det)
    elif kind == "trains":      # trains its own classifier, in its job folder's checkpoints/
        det = DETECTORS[method].for_bench_training(ctx.cfg.seed, confident_epochs, str(ctx.device),
                                                   str(folder / "checkpoints" / f"{method}.pt"),
                                                   plain=ctx.cfg.prof.plain)
        atomic_write_json(folder / "config.json", {"run_config": ctx.cfg.to_dict(), "params": _params(det)})
        det.fit(ctx.images["train"], ctx.labels["train"])
        ood, sizes = _score_images(ctx, det)
        accuracy = float((det.predict_class(ctx.images["test"]) == ctx.labels["test"].numpy()).mean() * 100)
        params = _params(det)
        params["history"] = getattr(det, "history_", None)
    else:
        raise ValueError(f"bench: no protocol for {method!r} (consumes {kind!r})")
    if accuracy is None and not method_info(method).classifier_free:
        accuracy = ctx.accuracy_plain()
    return {"ood": ood, "n_ood": sizes, "tuning": tuning, "hyper_parameters": params, "accuracy": accuracy}


def _score_images(ctx: Context, det) -> tuple[dict, dict]:
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


def _evaluate_tuned(ctx: Context, method: str, log):
    base, fair = method.removesuffix("-fair"), method.endswith("-fair")
    names = ctx.ood_names
    # One generic search for every tunable detector (its class declares param_grid and scores the
    # whole grid in one pass: grid_scores), under either protocol.
    cls = DETECTORS[base]
    det = cls.for_tuning(ctx.plain, features=ctx.outputs()["train"]["features"], y=ctx.labels["train"].numpy())
    points = grid_points(cls.param_grid)
    keys = tuple(cls.param_grid)

    def grid(x):
        return det.grid_scores(x)

    def select(g_in, g_out):
        return select_point(points, g_in, g_out)

    def scores(choice, x):
        return det.grid_scores(x, [{k: choice[k] for k in keys}])[0]
    params = {f"grid_{k}": [float(v) for v in vals] for k, vals in cls.param_grid.items()}
    if "features" in cls.uses:
        params["features"] = "penultimate (Dense-128)"

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
