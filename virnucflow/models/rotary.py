"""ESM-2's rotary position embedding (Su et al. 2021, NeoX rotate-half, as fair-esm applies it):
the checkpoint's ``inv_freq`` and the FP32 cos/sin tables a batch's layers share."""

from __future__ import annotations

import torch
from torch import nn

from . import kernels


class RotaryEmbedding(nn.Module):
    """Holds ``inv_freq`` (loaded from the checkpoint, not recomputed)."""

    def __init__(self, dim: int):
        super().__init__()
        if torch.empty(0).device.type == "meta":  # built for its shapes: the checkpoint's values replace these
            inv_freq = torch.empty(dim // 2)
        else:
            inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)


class Rotary:
    """FP32 cos/sin tables for one batch: (N, D), one row per position (padded) or token (packed)."""

    def __init__(self, inv_freq: torch.Tensor, positions: torch.Tensor):
        self.inv_freq = inv_freq
        self.cos, self.sin = self._tables(positions)
        self._by_position: tuple[torch.Tensor, torch.Tensor] | None = None

    def _tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (N, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (N, D)
        return emb.cos(), emb.sin()

    def by_position(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, D) tables for positions 0..n-1 (the same values as the per-token rows), for the
        attention kernel that rotates q and k itself; made once per batch."""
        if self._by_position is None or self._by_position[0].shape[0] < n:
            self._by_position = self._tables(torch.arange(n, device=self.cos.device))
        return self._by_position

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, H, D), table per position."""
        return kernels.rotary_reference(x, self.cos[None, :, None, :], self.sin[None, :, None, :])

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, H, D), table per token."""
        return kernels.rotary_reference(x, self.cos[:, None, :], self.sin[:, None, :])
