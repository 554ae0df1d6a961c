"""Training loops with epoch checkpoints that resume to bit-identical results.

Every epoch draws its randomness (shuffling, dropout, outlier generation) from a seed derived
from (run seed, stage, epoch), and the model, optimiser and schedule state are saved atomically
after every epoch, so a run killed at any point and started again ends where an uninterrupted
run of the same seed ends.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import MEMORY_FORMATS, Profile, Stage, Variant
from .distributed import current as current_dist
from .generate import ClassEllipsoids, encode_means, off_manifold_samples, on_manifold_samples
from .generate.patch_shuffle import patch_shuffled
from .errors import first_line
from .metrics import ood_metrics
from .utils import TorchFileError, atomic_torch_save, derive_seed, generator, safe_torch_load

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a dependency; keep the library usable without it
    def tqdm(it=None, **_kw):
        return it


def make_optimizer(stage: Stage, params) -> torch.optim.Optimizer:
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
    if stage.optimizer == "adadelta":   # Keras' Adadelta defaults
        return torch.optim.Adadelta(params, lr=stage.lr, rho=0.95, eps=1e-7, weight_decay=stage.weight_decay)
    if stage.optimizer == "rmsprop":    # Keras' RMSprop defaults
        return torch.optim.RMSprop(params, lr=stage.lr, alpha=0.9, eps=1e-7, weight_decay=stage.weight_decay)
    if stage.optimizer == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=0.9, nesterov=True, weight_decay=stage.weight_decay)
    raise ValueError(f"unknown optimizer {stage.optimizer!r}; use adam, adadelta, rmsprop or sgd")


def make_schedule(stage: Stage, optimizer, total_steps: int, warmup_steps: int = 0):
    """The stage's learning-rate schedule per step; ``warmup_steps`` > 0 multiplies it by a linear
    warm-up (step s uses (s + 1) / warmup_steps of it until the warm-up ends)."""
    if stage.schedule == "constant":
        def base(_s):
            return 1.0
    elif stage.schedule == "cosine":
        def base(s):
            return 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
    else:
        raise ValueError(f"unknown schedule {stage.schedule!r}; use constant or cosine")
    if warmup_steps > 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: base(s) * min(1.0, (s + 1) / warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, base)


def _tqdm_disable(progress: bool) -> bool | None:
    """tqdm's ``disable``: None shows the bar only on a terminal; True hides it."""
    return None if progress else True


def fit_epochs(stage_name: str, model: nn.Module, stage: Stage, steps_per_epoch: int,
               epoch_fn: Callable[[int, torch.Generator, torch.optim.Optimizer, object], float],
               ckpt_path: str | os.PathLike | None, seed: int, log: Callable[[str], None] = print,
               lr_warmup: int = 0, rng_stage: str | None = None,
               after_epoch: Callable[[nn.Module], dict] | None = None) -> dict:
    """Run ``stage.epochs`` epochs of ``epoch_fn``, checkpointing after each; resume if a
    checkpoint exists.  Returns the history (per-epoch loss and seconds; with ``after_epoch``, also
    ``history["monitor"]``: what it returns for the model after each epoch, saved in the checkpoint
    so that a resumed run keeps the earlier epochs' entries; it runs after the epoch's training and
    draws no training randomness).  ``lr_warmup``: steps of
    linear learning-rate warm-up (:func:`make_schedule`).  ``rng_stage``: the stage whose per-epoch
    randomness (shuffling, dropout) this one draws (default ``stage_name``): a baseline trained on the
    plain classifier's data order and dropout masks differs from it only by what it adds.

    Under torch.distributed (:mod:`oodgen.distributed`) every rank runs this loop on its shard of
    each batch, rank 0 alone writes the checkpoint and logs, and the others wait for it."""
    dist = current_dist()
    if not dist.main:
        log = _quiet
    optimizer = make_optimizer(stage, model.parameters())
    schedule = make_schedule(stage, optimizer, stage.epochs * steps_per_epoch, lr_warmup)
    history = {"loss": [], "seconds": []}
    rng_stage = rng_stage or stage_name
    start = 0
    if ckpt_path is not None and Path(ckpt_path).exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = state["history"]
        start = state["epoch"]
        if start > 0:
            log(f"[{stage_name}] resuming after epoch {start}/{stage.epochs} from {ckpt_path}")
    for epoch in range(start, stage.epochs):
        # dropout etc.; ranks draw their own (one process: the seed every earlier run used)
        torch.manual_seed(derive_seed(seed, rng_stage, epoch, "torch", *((dist.rank,) if dist.active else ())))
        t0 = time.perf_counter()
        model.train()
        loss = epoch_fn(epoch, generator(seed, rng_stage, epoch), optimizer, schedule)
        history["loss"].append(float(loss))
        history["seconds"].append(time.perf_counter() - t0)
        note = ""
        if after_epoch is not None and dist.main:
            history.setdefault("monitor", []).append({"epoch": epoch + 1, **after_epoch(model)})
            note = "".join(f", {k} {v:.4g}" for k, v in history["monitor"][-1].items() if isinstance(v, float))
        log(f"[{stage_name}] epoch {epoch + 1}/{stage.epochs} loss {loss:.4f} ({history['seconds'][-1]:.0f} s{note})")
        if ckpt_path is not None and dist.main:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "schedule": schedule.state_dict(), "history": history, "epoch": epoch + 1},
                              ckpt_path)
        dist.barrier()
    model.eval()
    return history


def _quiet(_msg: str) -> None:
    pass


class CheckpointError(ValueError):
    """A checkpoint cannot be read: corrupt, or holding more than tensors and plain values (such a
    file is refused unread: ``weights_only=True`` never runs code from a pickle)."""


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (``torch.load(..., weights_only=True)``) or raise :class:`CheckpointError`."""
    try:
        blob = safe_torch_load(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open checkpoint ({exc.strerror or first_line(exc)})") from None
    except TorchFileError as exc:       # a corrupt or crafted checkpoint must not be used
        raise CheckpointError(f"{path}: cannot read checkpoint safely ({exc}); delete it to retrain "
                              "that stage") from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not an oodgen checkpoint (a {type(blob).__name__}, not a dict)")
    return blob


def train_cvae(cvae: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: Stage, ckpt_path, seed: int,
               progress: bool = True, log=print, kl_warmup: float = 0.0, colour_sigma: float = 0.0,
               lr_warmup: int = 0) -> dict:
    """Train the CVAE; the KL weight ramps linearly from 0 to 1 over the first ``kl_warmup`` epochs
    (KL annealing, Bowman et al. 2016), which keeps the encoder from collapsing onto the prior.
    ``lr_warmup``: the learning rate ramps linearly over the first ``lr_warmup`` steps, which keeps
    the first full-size Adam/RMSprop steps from killing every ReLU unit of the encoder's second
    convolution (then the encoder sees only the label and the CVAE collapses; README "CVAE health").
    ``colour_sigma``: the chromaticity term of :meth:`oodgen.models.CVAE.loss` (colour images)."""
    n = len(x)
    steps = math.ceil(n / stage.batch_size)
    warmup_steps = kl_warmup * steps
    dist = current_dist()
    net = dist.wrap(cvae)

    def epoch_fn(epoch, gen, opt, sched):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in tqdm(range(steps), desc=f"CVAE epoch {epoch + 1}", leave=False,
                      disable=_tqdm_disable(progress and dist.main)):
            idx = dist.shard(perm[i * stage.batch_size:(i + 1) * stage.batch_size])
            xb, yb = x[idx], y[idx]
            logits, mu, log_var = net(xb, yb)
            step = epoch * steps + i
            kl_weight = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
            loss = cvae.loss(logits, xb, mu, log_var, kl_weight, colour_sigma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        return dist.sum(total) / n

    return fit_epochs("cvae", cvae, stage, steps, epoch_fn, ckpt_path, seed, log, lr_warmup=lr_warmup)


def layout(memory_format: str) -> torch.memory_format:
    """The torch memory format a profile's ``memory_format`` (one of :data:`oodgen.config.MEMORY_FORMATS`) names."""
    formats = dict(zip(MEMORY_FORMATS, (torch.contiguous_format, torch.channels_last)))
    if memory_format not in formats:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    return formats[memory_format]


def train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: Stage, ckpt_path, seed: int,
                progress: bool = True, log=print, stage_name: str = "plain", memory_format: str = "contiguous") -> dict:
    n = len(x)
    steps = math.ceil(n / stage.batch_size)
    dist = current_dist()
    fmt = layout(memory_format)
    net = dist.wrap(model.to(memory_format=fmt))

    def epoch_fn(epoch, gen, opt, sched):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in tqdm(range(steps), desc=f"{stage_name} epoch {epoch + 1}", leave=False,
                      disable=_tqdm_disable(progress and dist.main)):
            idx = dist.shard(perm[i * stage.batch_size:(i + 1) * stage.batch_size])
            loss = F.cross_entropy(net(x[idx].contiguous(memory_format=fmt)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        return dist.sum(total) / n

    return fit_epochs(stage_name, model, stage, steps, epoch_fn, ckpt_path, seed, log)


class OutlierPools:
    """Type I and Type II pools, regenerated online from the (frozen) CVAE.  Under
    torch.distributed each rank holds its own ``1/world`` shard of the pools."""

    def __init__(self, cvae, ellipsoids: ClassEllipsoids, x: torch.Tensor, y: torch.Tensor,
                 variant: Variant, pool_size: int):
        self.cvae, self.ellipsoids, self.x, self.y = cvae, ellipsoids, x, y
        dist = current_dist()
        self.variant, self.pool_size = variant, max(1, math.ceil(pool_size / dist.world))
        self.seconds = {"type1": 0.0, "type2": 0.0}
        self.type1 = self.type2 = self.extra = None

    def regenerate(self, gen: torch.Generator, progress: bool = False) -> None:
        idx = torch.randint(0, len(self.x), (self.pool_size,), generator=gen)
        t0 = time.perf_counter()
        chunks = []
        step = 2048
        for s in tqdm(range(0, self.pool_size, step), desc="Type I outliers", leave=False,
                      disable=_tqdm_disable(progress)):
            sub = idx[s:s + step]
            chunks.append(off_manifold_samples(self.cvae, self.x[sub], self.y[sub], beta=self.variant.beta_range(),
                                               nullspace=self.variant.nullspace, generator=gen,
                                               clip=self.variant.clip_mode()))
        self.type1 = torch.cat(chunks)
        t1 = time.perf_counter()
        labels = self.y[torch.randint(0, len(self.y), (self.pool_size,), generator=gen)]
        self.type2 = on_manifold_samples(self.cvae, self.ellipsoids, labels, radius=self.variant.type2_radius,
                                         generator=gen)
        self.seconds["type1"] += t1 - t0
        self.seconds["type2"] += time.perf_counter() - t1
        if self.variant.extra_outliers == "patch-shuffle":     # drawn last: the paper's pools stay as they were
            rows = torch.randint(0, len(self.x), (self.pool_size,), generator=gen)
            self.extra = patch_shuffled(self.x[rows], gen)


def fit_ellipsoids(cvae, x, y) -> ClassEllipsoids:
    return ClassEllipsoids(coverage=0.95).fit(encode_means(cvae, x, y), y)


def nplus1_monitor(x_val: torch.Tensor, y_val: torch.Tensor, panel: dict[str, torch.Tensor],
                   batch_size: int = 256) -> Callable[[nn.Module], dict]:
    """The n+1 classifier's per-epoch record, from data that is neither test nor OOD test data:
    ``val_accuracy`` (%, argmax over the n in-distribution outputs on the validation split) and the
    AUROC of p(n+1) between the validation images and each component of the generated panel
    (:mod:`oodgen.generate.panel`; ``panel_auroc`` per component, ``panel_mean_auroc`` their mean)."""
    def monitor(model: nn.Module) -> dict:
        logits = predict_logits(model, x_val, batch_size)
        acc = float((logits[:, :-1].argmax(1) == y_val.cpu()).double().mean() * 100)
        p_ood = torch.softmax(logits, 1)[:, -1].numpy()
        auroc = {name: float(ood_metrics(p_ood, torch.softmax(predict_logits(model, imgs, batch_size), 1)[:, -1].numpy())
                             ["auroc"]) for name, imgs in panel.items()}
        return {"val_accuracy": acc, "panel_mean_auroc": sum(auroc.values()) / max(len(auroc), 1),
                "panel_auroc": auroc}

    return monitor


def train_nplus1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pools: OutlierPools, prof: Profile,
                 ckpt_path, seed: int, progress: bool = True, log=print,
                 monitor: Callable[[nn.Module], dict] | None = None) -> dict:
    """The n+1 classifier: batches of in-distribution + Type I + Type II samples, the OOD class
    (label n) weighted ``w_ood`` per sample, loss = plain mean of the weighted per-sample losses
    (Keras' class_weight semantics, not CrossEntropyLoss(weight=), which divides by sum of weights).
    ``monitor``: called after every epoch (:func:`nplus1_monitor`), its record kept in the history."""
    stage = prof.classifier
    n = len(x)
    n_classes = int(model.n_outputs) - 1
    steps = math.ceil(n / stage.batch_size)
    nb1, nb2 = prof.batch_type1, prof.batch_type2
    dist = current_dist()
    fmt = layout(prof.memory_format)
    net = dist.wrap(model.to(memory_format=fmt))

    def epoch_fn(epoch, gen, opt, sched):
        if epoch % prof.regen_every == 0 or pools.type1 is None:
            # The pool of a resumed run is rebuilt from the epoch it was last regenerated at; each
            # rank of a distributed run generates its own shard.
            last = epoch - epoch % prof.regen_every
            rank = ("rank", dist.rank) if dist.active else ()
            pools.regenerate(generator(seed, "pools", last, *rank), progress and dist.main)
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in tqdm(range(steps), desc=f"n+1 classifier epoch {epoch + 1}", leave=False,
                      disable=_tqdm_disable(progress and dist.main)):
            idx = dist.shard(perm[i * stage.batch_size:(i + 1) * stage.batch_size])
            m = len(idx)
            k1 = max(1, nb1 * m // stage.batch_size)
            k2 = max(1, nb2 * m // stage.batch_size)
            i1 = torch.randint(0, len(pools.type1), (k1,), generator=gen)
            i2 = torch.randint(0, len(pools.type2), (k2,), generator=gen)
            parts = [x[idx], pools.type1[i1], pools.type2[i2]]
            if getattr(pools, "extra", None) is not None:     # --extra-outliers: as many as Type II, drawn after the paper's
                parts.append(pools.extra[torch.randint(0, len(pools.extra), (k2,), generator=gen)])
            xb = torch.cat(parts)
            k_ood = len(xb) - m
            yb = torch.cat([y[idx], torch.full((k_ood,), n_classes, dtype=y.dtype, device=y.device)])
            w = torch.cat([torch.ones(m, device=y.device), torch.full((k_ood,), prof.w_ood, device=y.device)])
            loss = (F.cross_entropy(net(xb.contiguous(memory_format=fmt)), yb, reduction="none") * w).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * m
        return dist.sum(total) / n

    return fit_epochs("nplus1", model, stage, steps, epoch_fn, ckpt_path, seed, log, after_epoch=monitor)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, computed on the model's device, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    if not len(x):
        return torch.empty(0)
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
