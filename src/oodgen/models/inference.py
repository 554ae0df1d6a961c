"""Inference copies of the networks: eval mode, channels-last memory format, fp32 or bfloat16.

On the CPU (oneDNN) the convolutions of the Fig. 6c classifier run 1.5x faster and the CVAE's
transposed convolutions 1.5x faster in channels-last format, with the same weights; outputs
agree up to float rounding (``benchmarks/bench_rules.py``).  Training stays in the default
format (channels-last did not speed training up here; ``benchmarks/bench_training.py``), so
these are copies made once training is over, used for scoring only.

**Precision** (scoring only; training is always float32):

* ``"fp32"``: float32 weights and activations (every committed result was scored this way);
* ``"bf16"``: the convolutions' weights and inputs in bfloat16, the dense layers (a tenth of
  the arithmetic, and the layers that produce the logits, features and latent means the scores
  are made of) in float32; outputs returned as float32.  oneDNN runs it on the AMX tile units of recent Intel Xeons (Sapphire Rapids and
  later), where the classifier pass is several times faster (``benchmarks/bench_rules.py``
  measures both, and each rule's AUROC in both precisions); on a CPU without them it is slower
  than float32;
* ``"auto"``: ``"bf16"`` where it is fast - a CPU that reports ``amx_bf16`` in
  ``/proc/cpuinfo``, or a CUDA device that supports bfloat16 - else ``"fp32"``.

The default everywhere is ``"fp32"``.  bfloat16 keeps 8 bits of mantissa: each convolution output
moves by about 0.4 % of its scale, and AUROCs move with it - by up to 0.13 points for p(n+1) on the
F-MNIST seed-2 run, 0.04 on MNIST 0-4 (``benchmarks/RESULTS.md``), more than this project's
0.05-point tolerance for a speed-up, so it is opt-in.  The detector's ``precision`` says which is used.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    """True when the CPU reports the AMX bfloat16 tile instructions (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(precision: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for ``precision`` (one of :data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if cpu_has_amx_bf16() else "fp32"
    return "fp32"


def inference_copy(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """An eval-mode, channels-last copy of ``model`` in ``precision`` (``model`` is left as it is)."""
    return as_inference(copy.deepcopy(model), precision)


class _Float32Linear(nn.Module):
    """A dense layer of a bf16 inference copy kept in float32: its input is cast up, its output stays
    float32 (so logits, features and the CVAE's latent mean carry no bfloat16 rounding of their own).
    The wrappers cast their own inputs, so callers pass float32 images as to any model; ``weight``
    is forwarded for code that reads a layer's weights."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear.float()

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float())


class _Bfloat16Conv(nn.Module):
    """A (transposed) convolution of a bf16 inference copy: its input is cast to bfloat16."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv.to(torch.bfloat16)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.to(torch.bfloat16))


def _mixed_bf16(model: nn.Module) -> nn.Module:
    """Convolutions (nearly all the arithmetic) in bfloat16, dense layers in float32, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, _Float32Linear(child))
            elif isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
                setattr(parent, name, _Bfloat16Conv(child))
    return model


def as_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """Put ``model`` itself in eval mode, channels-last format and ``precision`` (``"fp32"`` or
    ``"bf16"``; ``"auto"`` is resolved for the model's device); returns it.  In ``"bf16"`` the
    convolutions run in bfloat16 and the dense layers in float32 (their cost is small and their
    outputs - logits, features - are what the scores are made of)."""
    device = next(model.parameters()).device
    model = model.eval().to(memory_format=torch.channels_last)
    if resolve_precision(precision, device) == "bf16":
        _mixed_bf16(model)
    return model


def model_precision(model: nn.Module) -> str:
    """``"bf16"`` or ``"fp32"``: whether ``model``'s convolutions are a bf16 inference copy's."""
    return "bf16" if any(p.dtype == torch.bfloat16 for p in model.parameters()) else "fp32"
