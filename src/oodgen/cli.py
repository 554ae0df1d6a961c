"""Command-line interface: ``oodgen run | score | data | bench | select | demo | figures | report | publish``."""
from __future__ import annotations

import argparse
import sys

from .config import EXTRA_OUTLIERS, HEADS, MEMORY_FORMATS, PROFILES, RECOMMENDED, SCORE_ALIASES, RunConfig, Variant
from .detectors.oodgen import SCORES


def _add_variant(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("variant options (paper default vs the authors' code)")
    g.add_argument("--encoder-act", choices=["leaky-all", "leaky", "relu"], default=Variant.encoder_act,
                   help="the CVAE encoder's activations: leaky-all = LeakyReLU(0.2) in its 16-unit layer and both "
                        "convolutions (default), leaky = in the 16-unit layer only (the default before 2026-12-01), "
                        "relu = the paper's (dies and collapses the CVAE, see README 'CVAE health')")
    g.add_argument("--kl-warmup", type=float, default=Variant.kl_warmup, metavar="EPOCHS",
                   help="epochs over which the CVAE's KL weight ramps from 0 to 1 (default 1; 0 = the paper's loss)")
    g.add_argument("--cvae-lr-warmup", type=int, default=Variant.cvae_lr_warmup, metavar="STEPS",
                   help="ramp the CVAE's learning rate linearly over its first STEPS optimiser steps (0 = none, the "
                        "paper's; keeps the first full-size steps from killing the encoder's convolution units, "
                        "README 'CVAE health')")
    g.add_argument("--cvae-retries", type=int, default=Variant.cvae_retries, metavar="N",
                   help="train a CVAE that fails its health check (collapsed) again from a fresh initialisation, "
                        "up to N times (default 2; 0 = a single attempt, as the paper)")
    g.add_argument("--colour-sigma", type=float, default=0.0, metavar="S",
                   help="colour images: add a Gaussian term on each image's chromaticity (scale S) to the CVAE's "
                        "loss (beyond the paper; 0 = off, the default; 0.01 with --latent 12 is the recommended "
                        "colour recipe, README 'Your own data')")
    g.add_argument("--z", choices=["sampled", "mean"], default="sampled",
                   help="CVAE latent during training: sampled (paper's VAE) or mean (authors' code)")
    g.add_argument("--beta", default="paper",
                   help="Type I step size: paper = U[0.1,1], authors = U[0.1,28], wide = log-uniform [0.1,28], or LOW,HIGH")
    g.add_argument("--nullspace", choices=["uniform", "rref"], default="uniform",
                   help="Type I direction: uniform in the null space, or the authors' RREF basis")
    g.add_argument("--type2-radius", choices=["surface", "shell"], default="surface",
                   help="Type II radius: on the 95%% ellipsoid (paper) or U(r,1.5r) (authors)")
    g.add_argument("--score", choices=[*SCORE_ALIASES, *SCORES], default=Variant.score,
                   help=f"primary score (printed first; every rule is always evaluated and stored): recommended = "
                        f"{RECOMMENDED} (default; chosen without test data, docs/protocol.md), "
                        "paper = p(n+1), but 1-max p_in for mnist0-4; feature-knn = the k-th nearest training "
                        "feature's distance in the n+1 classifier's penultimate layer; ood-class+knn = "
                        "p(n+1) fused with a feature KNN distance, reject+knn = rejected by the n+1 class, else ranked by "
                        "that distance, reject+fisher = rejected by the n+1 class, else ranked by Fisher's combination of "
                        "that distance, the CVAE likelihood, the likelihood minus zlib length and a pixel KNN distance "
                        "(all three beyond the paper); feature-knn+pixel-guard@max = feature-knn with images farther in "
                        "pixel space than every calibration image first (round 2's choice, and round 6's with the cosine head: the recommended rule); "
                        "feature-knn+class-pixel-guard@max = the same with the distance to the predicted class's "
                        "training images (rounds 3-5's choice on the linear head)")
    g.add_argument("--extra-outliers", choices=list(EXTRA_OUTLIERS), default="none",
                   help="beyond the paper: a third outlier pool for the n+1 classifier, as many per batch as Type II: "
                        "patch-shuffle = training images with their 4 x 4 tiles permuted (default none: the paper's "
                        "Type I and II only)")
    g.add_argument("--head", choices=list(HEADS), default=Variant().head,
                   help="the n+1 classifier's last layer: cosine (default; beyond the paper: 16 x the cosine between "
                        "features and weights, the winner of docs/protocol.md round 6) or linear (the paper's Dense "
                        "layer, which the committed full runs used)")
    g.add_argument("--clip-type1", choices=["clip", "none", "half"], default="clip",
                   help="clip Type I samples to [0,1] (authors' code), not at all (eq. 2), or a random half")
    g.add_argument("--sphere-radius", choices=["paper", "authors"], default="paper",
                   help="Sphere-OOD radius: max training norm (paper) or +2 (authors)")


def _regen(value: str | None) -> int | str | None:
    """``--regen-every``: None, ``"authors"`` or a positive integer (checked by RunConfig.regen_interval)."""
    if value is None or value == "authors":
        return value
    return int(value) if value.strip().isdigit() else value


def _variant(a) -> Variant:
    if not a.kl_warmup >= 0:
        raise ValueError(f"--kl-warmup must be >= 0, got {a.kl_warmup}")
    if not a.colour_sigma >= 0:
        raise ValueError(f"--colour-sigma must be >= 0, got {a.colour_sigma}")
    if a.cvae_lr_warmup < 0:
        raise ValueError(f"--cvae-lr-warmup must be >= 0, got {a.cvae_lr_warmup}")
    if a.cvae_retries < 0:
        raise ValueError(f"--cvae-retries must be >= 0, got {a.cvae_retries}")
    return Variant(encoder_act=a.encoder_act, kl_warmup=a.kl_warmup, sample_z=a.z == "sampled", beta=a.beta, nullspace=a.nullspace,
                   type2_radius=a.type2_radius, score=a.score, sphere_radius=a.sphere_radius,
                   clip_type1=a.clip_type1, cvae_retries=a.cvae_retries, colour_sigma=a.colour_sigma,
                   cvae_lr_warmup=a.cvae_lr_warmup, extra_outliers=a.extra_outliers,
                   head=a.head)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oodgen", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and evaluate the detector on one in-distribution setting")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--id", choices=["mnist", "fmnist", "mnist0-4", "fmnist0-4", "cifar10"],
                     help="one of the paper's in-distribution settings")
    src.add_argument("--train", metavar="PATH",
                     help="your own labelled images: a folder with one sub-folder per class, an .npz "
                          "(x, y) or IDX files (README 'Your own data')")
    r.add_argument("--test", metavar="PATH", help="your own test set (default: a seeded 20 %% of --train)")
    r.add_argument("--ood", metavar="NAME=PATH", action="append", default=None,
                   help="an OOD set to evaluate on (folder of images or .npz); repeatable. Gaussian, "
                        "uniform and Sphere noise of the images' shape are always added")
    r.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize every image (training, test, OOD) to H x W (multiples of 4)")
    r.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="convert every image to grey (1) or colour (3)")
    r.add_argument("--latent", type=int, default=None, metavar="D",
                   help="CVAE latent dimension (default: the paper's, 8 for MNIST and 10 for Fashion-MNIST; "
                        "8 for CIFAR-10 and your own data)")
    r.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True, help="run directory (resumed if it holds checkpoints)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--data-dir", default=None, help="folder searched first for datasets")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--w-ood", type=float, default=None,
                   help="weight of the OOD class per sample (default: the profile's, 0.1 as in the paper)")
    r.add_argument("--plain", action=argparse.BooleanOptionalAction, default=None,
                   help="train the plain n-class classifier the baselines score (default: for the built-in "
                        "settings, which oodgen bench benchmarks; not for your own data)")
    r.add_argument("--regen-every", default=None, metavar="K|authors",
                   help="epochs between regenerations of the Type I / II outlier pools (default: every epoch); "
                        "'authors' = their code's interval (5; 10 for fmnist). Changes the numbers; recorded")
    r.add_argument("--memory-format", choices=MEMORY_FORMATS, default=None,
                   help="memory layout of the classifiers' training: contiguous (default; the committed runs) or "
                        "channels_last (other convolution kernels, faster on some CPUs; dropout then draws other "
                        "masks, like another dropout seed). Recorded in config.json")
    r.add_argument("--hparams", choices=("paper", "authors"), default="paper",
                   help="with --profile paper: the n+1 classifier's Adadelta learning rate and OOD weight per "
                        "setting, paper = the text's (lr 0.01 MNIST, 0.1 F-MNIST; w_ood 0.1; pools every epoch), "
                        "authors = their logged from-scratch runs' (lr 0.05 MNIST, 0.1 F-MNIST, 0.02 MNIST 0-4, "
                        "0.1 F-MNIST 0-4; w_ood 0.1; pools every 5 epochs, 10 for fmnist). Recorded")
    r.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="precision the evaluation scores in (training is always fp32): fp32 (default: the "
                        "committed results), bf16 (faster on CPUs with AMX; AUROC moves by up to ~0.1 point), "
                        "or auto (bf16 where fast); recorded in metrics.json")
    r.add_argument("--strict", action="store_true",
                   help="stop with an error when the trained CVAE fails its health check (collapsed)")
    r.add_argument("--distributed", type=int, default=None, metavar="N",
                   help="data-parallel training in N local processes (torchrun, DDP: gloo on the CPU, NCCL on "
                        "GPUs); the same as `torchrun --nproc-per-node N -m oodgen run ...` (docs/scaling.md)")
    _add_variant(r)

    from . import score
    from .data import download
    from .bench import add_parser as add_bench_parser
    score.add_parser(sub)
    download.add_parser(sub)
    add_bench_parser(sub)
    from . import compare, publish, report, selection
    from .toy import demo
    compare.add_parser(sub)
    selection.add_parser(sub)
    demo.add_parser(sub)
    report.add_parser(sub)
    publish.add_parser(sub)
    return ap


def _without_distributed(argv: list[str]) -> list[str]:
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok == "--distributed":
            skip = True
        elif not tok.startswith("--distributed="):
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    a = ap.parse_args(argv)
    from ._runtime import tune_allocator
    tune_allocator()
    from .data import DataError
    from .detectors.base import InputError
    from .generate.health import CollapsedCVAEError
    from .run import RunError
    try:
        if getattr(a, "func", None) is not None:
            return a.func(a)
        if a.command == "run":
            from .run import run
            if a.latent is not None and not a.latent >= 1:
                raise ValueError(f"--latent must be a positive integer, got {a.latent}")
            if a.w_ood is not None and not a.w_ood > 0:
                raise ValueError(f"--w-ood must be positive, got {a.w_ood}")
            if a.train is None and (a.test or a.ood or a.size or a.channels):
                raise ValueError("--test, --ood, --size and --channels go with --train (your own data)")
            cfg = RunConfig(id=a.id or "custom", seed=a.seed, profile=a.profile, device=a.device,
                            variant=_variant(a), w_ood=a.w_ood, regen_every=_regen(a.regen_every), plain=a.plain,
                            hparams=a.hparams, memory_format=a.memory_format,
                            train=a.train, test=a.test,
                            ood=tuple(a.ood) if a.ood else None, size=tuple(a.size) if a.size else None,
                            channels=a.channels, latent_dim=a.latent)
            import warnings

            from . import distributed
            if a.distributed is not None and not distributed.launched_by_torchrun():
                if a.distributed < 1:
                    raise ValueError(f"--distributed must be a positive number of processes, got {a.distributed}")
                if a.distributed > 1:
                    import subprocess
                    return subprocess.call(distributed.torchrun_argv(a.distributed, _without_distributed(argv)))
            from .generate.health import CollapsedCVAEWarning
            warnings.simplefilter("ignore", CollapsedCVAEWarning)   # run prints its own banner
            distributed.init(a.device)
            try:
                run(cfg, a.out, data_dir=a.data_dir, progress=not a.no_progress, strict=a.strict,
                    precision=a.precision)
            finally:
                distributed.shutdown()      # a failing rank: torchrun stops the others
            return 0
    # OSError: a file the command reads or writes (a permission, a full disk)
    except (DataError, InputError, RunError, CollapsedCVAEError, ValueError, OSError) as exc:
        print(f"oodgen {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"oodgen {a.command}: error: out of memory (an input too large for this machine?)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oodgen {a.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
