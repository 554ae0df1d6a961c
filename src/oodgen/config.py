"""Run configuration and the training profiles (``smoke``, ``quick``, ``full``, ``paper``).

A profile fixes how long and with what optimiser the CVAE and the classifiers train; the
*variant options* fix which of the paper / authors'-code choices the method uses.  Both are
stored in every ``metrics.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

LATENT_DIMS = {"mnist": 8, "mnist0-4": 8, "fmnist": 10, "fmnist0-4": 10}
# The authors' code regenerates the whole outlier pool every `gen_interval` epochs (authors-code notes, section 4).
AUTHORS_REGEN_EVERY = {"mnist": 5, "mnist0-4": 5, "fmnist": 10, "fmnist0-4": 5}
# The n+1 classifier's Adadelta learning rate and OOD-class weight of the authors' logged runs that
# started from a fresh model (authors-code notes, section 6): MNIST lr 0.05 (the saved 70-epoch run),
# F-MNIST lr 0.1 (the fresh 50-epoch run, notebook cell 32), MNIST 0-4 lr 0.02 (the 150-epoch run its
# saved model continued), F-MNIST 0-4 lr 0.1 (the first, 100-epoch stage); w_ood 0.1 in all four. Their
# later stages (lower lr, w_ood 0.3-1.0, continuing a trained model) are not reproduced.
AUTHORS_HPARAMS = {"mnist": (0.05, 0.1), "fmnist": (0.1, 0.1), "mnist0-4": (0.02, 0.1), "fmnist0-4": (0.1, 0.1)}
HPARAMS = ("paper", "authors")
MEMORY_FORMATS = ("contiguous", "channels_last")
EXTRA_OUTLIERS = ("none", "patch-shuffle")   # Variant.extra_outliers (oodgen.generate.patch_shuffle)
HEADS = ("linear", "cosine")                 # Variant.head (oodgen.models.classifier.Fig6cCNN)
CUSTOM_ID = "custom"          # a run on the user's own data (RunConfig.train)
# The score of ``--score recommended``, the default everywhere: the score half of the winner of the selection
# protocol (docs/protocol.md, round 6, whose recipe half is the cosine head, Variant.head), chosen on
# leave-one-class-out folds of the training splits, never on a test OOD set (``oodgen select --round 6``;
# results/selection/round6/decision.json): the KNN distance in the n+1 classifier's penultimate features,
# with images farther in pixel space from the training images than every calibration image ranked first
# (oodgen.detectors.fusion.GUARD_RULE).  Round 1 chose "feature-knn", round 2 this rule (on the linear
# head), rounds 3-5 "feature-knn+class-pixel-guard@max" (on the linear head).
RECOMMENDED = "feature-knn+pixel-guard@max"
SCORE_ALIASES = ("recommended", "paper")


def resolve_score(score: str, setting: str = "") -> str:
    """The score rule an option names: ``"recommended"`` -> :data:`RECOMMENDED`; ``"paper"`` -> p(n+1)
    (``"ood-class"``), but 1 - max p_in (``"max-in"``) for ``mnist0-4`` as the authors score it;
    any other name is itself."""
    if score == "recommended":
        return RECOMMENDED
    if score == "paper":
        return "max-in" if setting == "mnist0-4" else "ood-class"
    return score


@dataclass(frozen=True)
class Variant:
    """Where the paper and the authors' code disagree (defaults are the paper's), and the CVAE
    fixes beyond both (``encoder_act``, ``kl_warmup``, ``cvae_lr_warmup``, ``cvae_retries``), whose defaults are the
    fixes: the paper's form collapses (README, "CVAE health")."""

    encoder_act: str = "leaky-all"     # CVAE encoder's activations: "leaky-all" = LeakyReLU(0.2) in the 16-unit
                                       # layer and both convolutions (default since 2026-12-01), "leaky" = in
                                       # the 16-unit layer only (the default before; its convolutions' ReLUs can
                                       # still die), "relu" = the paper's and authors' form (dies and collapses
                                       # the CVAE: README "CVAE health")
    kl_warmup: float = 1.0             # CVAE: epochs over which the KL weight ramps 0 -> 1 (default 1;
                                       # 0 = the paper's loss from the first step)
    sample_z: bool = True              # paper: VAE with sampled z; authors' code: z = mu
    beta: str = "paper"                # Type I step: paper U[0.1, 1]; "authors" U[0.1, 28];
                                       # "wide" log-uniform [0.1, 28]; or "LOW,HIGH"
    nullspace: str = "uniform"         # uniform direction in null(J^T); "rref": authors' basis
    type2_radius: str = "surface"      # paper: on the 95 % ellipsoid; "shell": U(r, 1.5 r)
    score: str = "recommended"         # the primary score (every rule is always recorded): "recommended" =
                                       # RECOMMENDED (docs/protocol.md); "paper": p(n+1), but 1 - max p_in for
                                       # mnist0-4; or any rule of oodgen.detectors.oodgen.SCORES.  Evaluation
                                       # only: a run directory resumes under another score
    sphere_radius: str = "paper"       # Sphere-OOD radius: paper max-norm; "authors": max-norm + 2
    clip_type1: str = "clip"           # "clip" to [0, 1] (authors' code), "none" (eq. 2 as written),
                                       # "half" (a random half clipped)
    colour_sigma: float = 0.0          # colour images only (beyond the paper, which is grey): a Gaussian term
                                       # ||c(x) - c(p)||^2 / (2 sigma^2) on each image's chromaticity c beside
                                       # the Bernoulli loss (0 = off, the paper's loss; README "Your own data")
    cvae_lr_warmup: int = 0            # CVAE: steps over which the learning rate ramps linearly to the profile's
                                       # (0 = none, the paper's); keeps the first full-size optimiser steps
                                       # from killing every ReLU of the encoder's second convolution
    cvae_retries: int = 2              # a CVAE whose health check fails (collapsed) is trained again from a
                                       # fresh initialisation, up to this many times (0 = one attempt, as
                                       # the paper); runs written before the option: 2 (it never fired)
    extra_outliers: str = "none"       # beyond the paper: a third outlier pool for the n+1 classifier, as many per
                                       # batch as Type II: "patch-shuffle" = training images with their 4 x 4
                                       # tiles permuted (oodgen.generate.patch_shuffle); "none" = the paper's
    head: str = "cosine"               # the n+1 classifier's last layer: "cosine" (beyond the paper; default since
                                       # 2026-12-08, the winner of docs/protocol.md round 6) = 16 x cosine(features,
                                       # weights); "linear" = the paper's Dense layer (runs and files written before
                                       # the option: linear)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Variant":
        """A stored variant; runs written before ``encoder_act`` / ``kl_warmup`` / ``cvae_lr_warmup`` / ``head``
        existed used the paper's ReLU, no warm-up of either kind and the paper's linear last layer."""
        return cls(**{"encoder_act": "relu", "kl_warmup": 0.0, "cvae_lr_warmup": 0, "head": "linear", **d})

    def __post_init__(self) -> None:
        if self.extra_outliers not in EXTRA_OUTLIERS:
            raise ValueError(f"extra_outliers must be one of {EXTRA_OUTLIERS}, got {self.extra_outliers!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    def clip_mode(self) -> bool | str:
        return {"clip": True, "none": False, "half": "half"}[self.clip_type1]

    def beta_range(self) -> str | tuple[float, float]:
        if "," in self.beta:
            low, high = self.beta.split(",")
            return float(low), float(high)
        return self.beta


@dataclass(frozen=True)
class Stage:
    epochs: int
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    schedule: str = "constant"         # or "cosine" (per step, to 0)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Profile:
    name: str
    cvae: Stage
    classifier: Stage                  # the n+1 classifier; batch_size = in-distribution part
    plain: Stage                       # the plain n-class classifier of the same architecture, with
                                       # the n+1 classifier's budget (the baselines score it)
    batch_type1: int = 64
    batch_type2: int = 64
    w_ood: float = 0.1
    pool_fraction: float = 0.5         # outliers generated per regeneration, as a fraction of N
    regen_every: int = 1               # epochs between outlier-pool regenerations
    # memory layout of the classifiers' training (n+1 and plain), one of MEMORY_FORMATS: "contiguous" (the
    # committed runs) or "channels_last" (other convolution kernels, faster on CPUs whose oneDNN prefers it;
    # dropout draws its masks in memory order, so also other masks, like another dropout seed: a named option
    # until a seed check shows it stays within seed noise)
    memory_format: str = "contiguous"
    n_train: int | None = None         # use only the first n training images (smoke tests)
    n_eval: int | None = None          # evaluate on the first n of each test / OOD set
    # images per scoring batch in evaluation: 256 keeps the activations cache-resident (the classifier
    # pass is 1.2x faster than at 1000 in float32, 2x in bfloat16, on 2 cores); evaluation-only, so a
    # run written with another value resumes (oodgen.run.EVALUATION_ONLY)
    eval_batch: int = 256
    # after every n+1 epoch, record what needs no test data: validation accuracy and p(n+1)'s AUROC on
    # the validation split against the generated panel (oodgen.train.nplus1_monitor); costs a pass over
    # about 10,000 images per epoch, changes no training step, so it is evaluation-only too
    monitor: bool = False


PROFILES: dict[str, Profile] = {
    # For the test suite: seconds, numbers meaningless beyond "it runs".
    "smoke": Profile("smoke", cvae=Stage(1, batch_size=64), classifier=Stage(1, batch_size=64),
                     plain=Stage(1, batch_size=64), batch_type1=32, batch_type2=32,
                     n_train=600, n_eval=300, eval_batch=300),
    # The README's main job: a few minutes on 2 cores.
    "quick": Profile("quick", cvae=Stage(2, lr=2e-3, batch_size=256),
                     classifier=Stage(2, lr=1e-3, schedule="cosine"),
                     plain=Stage(2, lr=1e-3, schedule="cosine"), pool_fraction=0.5),
    # Tuned for CPU: paper-level detection in as few minutes as possible (see README "Profiles").
    "full": Profile("full", cvae=Stage(5, lr=2e-3, batch_size=256, schedule="cosine"),
                    classifier=Stage(8, lr=1e-3, schedule="cosine"),
                    plain=Stage(8, lr=1e-3, schedule="cosine"), pool_fraction=0.5),
    # The paper's optimiser settings (Adadelta); long, for a GPU.
    "paper": Profile("paper", cvae=Stage(100, optimizer="rmsprop", lr=1e-3, batch_size=128),
                     classifier=Stage(70, optimizer="adadelta", lr=0.01),
                     plain=Stage(70, optimizer="adadelta", lr=0.01), monitor=True),
}


@dataclass(frozen=True)
class RunConfig:
    id: str = "mnist"
    seed: int = 0
    profile: str = "full"
    device: str = "auto"
    variant: Variant = field(default_factory=Variant)
    latent_dim: int | None = None
    w_ood: float | None = None         # overrides the profile's OOD-class weight when set
    # the paper profile's per-setting classifier hyper-parameters: "paper" (the text: Adadelta lr 0.01 for
    # MNIST, 0.1 for F-MNIST, w_ood 0.1, pools regenerated every epoch) or "authors" (AUTHORS_HPARAMS' lr
    # and w_ood, pools every AUTHORS_REGEN_EVERY epochs); --w-ood / --regen-every still override
    hparams: str = "paper"
    regen_every: int | str | None = None   # epochs between Type I/II pool regenerations: None = the profile's
                                       # (1, every epoch), an integer, or "authors": their code's 5 (10 for
                                       # fmnist; AUTHORS_REGEN_EVERY); changes the numbers, recorded in config
    # the plain n-class classifier the post-hoc baselines score: None = trained for the built-in settings
    # (oodgen bench and the paper's accuracy comparison need it), not for your own data (nothing uses it)
    plain: bool | None = None
    memory_format: str | None = None   # the classifiers' training layout (Profile.memory_format): None = the profile's
    # Your own data (id "custom"): paths of the training and test sets (oodgen.data.user), OOD sets
    # as "NAME=PATH", and an optional resize / channel conversion of every image.
    train: str | None = None
    test: str | None = None
    ood: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        if self.train is not None and self.id != CUSTOM_ID:
            object.__setattr__(self, "id", CUSTOM_ID)
        if self.ood is not None:
            object.__setattr__(self, "ood", tuple(self.ood))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if self.latent_dim is None:
            object.__setattr__(self, "latent_dim", LATENT_DIMS.get(self.id, 8))
        if self.memory_format is not None and self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        if self.hparams not in HPARAMS:
            raise ValueError(f"hparams must be one of {HPARAMS}, got {self.hparams!r}")
        if self.hparams == "authors" and (self.profile != "paper" or self.id not in AUTHORS_HPARAMS):
            raise ValueError("hparams 'authors' needs the paper profile (Adadelta, whose learning rates they are) "
                             f"and one of the paper's settings {sorted(AUTHORS_HPARAMS)}; got profile "
                             f"{self.profile!r}, id {self.id!r}")

    @property
    def prof(self) -> Profile:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; use one of {sorted(PROFILES)}")
        base = PROFILES[self.profile]
        if self.profile == "paper" and self.id.startswith("fmnist"):
            # The paper: Adadelta lr 0.1 for Fashion-MNIST, 0.01 for MNIST.
            base = replace(base, classifier=replace(base.classifier, lr=0.1),
                           plain=replace(base.plain, lr=0.1))
        if self.hparams == "authors":       # the n+1 classifier only: the plain one keeps the paper's
            lr, w_ood = AUTHORS_HPARAMS[self.id]
            base = replace(base, classifier=replace(base.classifier, lr=lr), w_ood=w_ood,
                           regen_every=AUTHORS_REGEN_EVERY[self.id])
        if self.w_ood is not None:
            base = replace(base, w_ood=float(self.w_ood))
        if self.regen_every is not None:
            base = replace(base, regen_every=self.regen_interval())
        if self.memory_format is not None:
            base = replace(base, memory_format=self.memory_format)
        return base

    @property
    def trains_plain(self) -> bool:
        """Whether the run trains the plain n-class classifier (see :attr:`plain`)."""
        return self.train is None if self.plain is None else bool(self.plain)

    def regen_interval(self) -> int:
        """Epochs between outlier-pool regenerations that :attr:`regen_every` names."""
        if self.regen_every == "authors":
            return AUTHORS_REGEN_EVERY.get(self.id, 5)
        try:
            k = int(self.regen_every)
        except (TypeError, ValueError):
            raise ValueError(f"regen_every must be a positive integer or 'authors', got {self.regen_every!r}") from None
        if k < 1 or str(k) != str(self.regen_every).strip():
            raise ValueError(f"regen_every must be a positive integer or 'authors', got {self.regen_every!r}")
        return k

    @property
    def latent(self) -> int:
        return self.latent_dim or LATENT_DIMS.get(self.id, 8)

    @property
    def score_rule(self) -> str:
        """The score this run reports as its primary one."""
        return resolve_score(self.variant.score, self.id)

    @property
    def paper_rule(self) -> str:
        """The paper's score for this setting, reported beside the primary one."""
        return resolve_score("paper", self.id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("ood", "size"):
            if d[k] is not None:
                d[k] = list(d[k])
        d["profile_settings"] = asdict(self.prof)
        d["latent_dim"] = self.latent
        d["score_used"] = self.score_rule
        d["score_paper"] = self.paper_rule
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["variant"] = Variant.from_dict(d.get("variant", {}))
        return cls(**kw)
