"""Inference copies of the networks: eval mode, channels-last memory format.

On the CPU (oneDNN) the convolutions of the Fig. 6c classifier run 1.5x faster and the CVAE's
transposed convolutions 1.5x faster in channels-last format, with the same weights; outputs
agree up to float rounding (``benchmarks/bench_rules.py``).  Training stays in the default
format (channels-last did not speed training up here; ``benchmarks/bench_training.py``), so
these are copies made once training is over, used for scoring only.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, channels-last copy of ``model`` (``model`` itself is left as it is)."""
    return as_inference(copy.deepcopy(model))


def as_inference(model: nn.Module) -> nn.Module:
    """Put ``model`` itself in eval mode and channels-last format; returns it."""
    return model.eval().to(memory_format=torch.channels_last)
