"""Random weights for demo models, tests and benchmarks (both models)."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_random(model: nn.Module, seed: int) -> None:
    """Deterministic random weights that make every layer matter.

    Linear weights ~ N(0, 1/fan_in) so each sublayer changes the residual
    stream by about as much as it carries (tests comparing implementations
    must not pass just because layers are near-identity), biases N(0, 0.02),
    LayerNorm affine near (1, 0), embeddings N(0, 1). Numbers are drawn on the
    model's device (build a full-size model under ``torch.device("cuda")`` to
    initialise it quickly); the same seed on another device gives other values.
    """
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            randn = lambda: torch.randn(p.shape, generator=g, device=device, dtype=p.dtype)
            if p.ndim == 2 and "embed" not in name:
                p.copy_(randn() / math.sqrt(p.shape[1]))
            elif p.ndim == 2:
                p.copy_(randn())
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.1 * randn())
            else:
                p.copy_(0.02 * randn())
