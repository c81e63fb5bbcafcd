"""Mean pooling as the original VirNucPro pools each model's last layer.

- ESM-2 (``extract_esm``): ``t[i, 1 : min(1024, len) + 1].mean(0)``: residues
  only, no ``<cls>``/``<eos>``, at most the first 1024 residues (the model
  itself sees the whole sequence).
- DNABERT-S (``extract_DNABERT_S``): ``mean(hidden_states, dim=1)`` of one
  unpadded sequence: every token, ``[CLS]`` and ``[SEP]`` included.

Both are expressed as a window ``[skip_first, skip_first + min(limit, n -
skip_first - skip_last))`` of each sequence, and averaged in FP32 whatever the
model's dtype, on the device, without host round-trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .packing import PackedBatch, PaddedBatch


@dataclass(frozen=True)
class PoolingWindow:
    skip_first: int = 0  # tokens dropped at the start (ESM: <cls>)
    skip_last: int = 0  # tokens dropped at the end (ESM: <eos>)
    limit: int | None = None  # at most this many tokens (ESM: 1024 residues)

    def counts(self, lengths: torch.Tensor) -> torch.Tensor:
        n = (lengths - self.skip_first - self.skip_last).clamp(min=0)
        return n.clamp(max=self.limit) if self.limit is not None else n


ESM_POOLING = PoolingWindow(skip_first=1, skip_last=1, limit=1024)
DNABERT_POOLING = PoolingWindow()


def pool_packed(hidden: torch.Tensor, batch: PackedBatch, window: PoolingWindow) -> torch.Tensor:
    """(T, E) hidden states of a packed batch -> (B, E) float32 means."""
    counts = window.counts(batch.seqlens())  # (B,)
    total = batch.num_tokens
    seg = batch.segments[:total].long()
    pos = batch.positions[:total]
    keep = (pos >= window.skip_first) & (pos < window.skip_first + counts[seg])  # (T_real,)
    # weights instead of boolean indexing: no host synchronisation
    sums = batch.segment_sum(hidden[:total].float() * keep[:, None])
    return sums / counts.clamp(min=1)[:, None].float()


def pool_padded(hidden: torch.Tensor, batch: PaddedBatch, window: PoolingWindow) -> torch.Tensor:
    """(B, L, E) hidden states of a padded batch -> (B, E) float32 means."""
    counts = window.counts(batch.lengths)
    pos = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    keep = (pos >= window.skip_first) & (pos < window.skip_first + counts[:, None])  # (B, L)
    sums = (hidden.float() * keep[..., None]).sum(dim=1)
    return sums / counts.clamp(min=1)[:, None].float()


class PooledEncoder:
    """What every embedding model shares: last-layer states by the batch's layout, and the
    pooled vectors of them. A model provides ``forward_packed``, ``forward_padded`` and its
    ``pooling_window``."""

    pooling_window: PoolingWindow

    def hidden_states(self, batch: PackedBatch | PaddedBatch, backend: str) -> torch.Tensor:
        """Last-layer states: (T, E) of a packed batch, (B, L, E) of a padded one."""
        if isinstance(batch, PackedBatch):
            return self.forward_packed(batch, backend)
        return self.forward_padded(batch, backend)

    def embed(self, batch: PackedBatch | PaddedBatch, backend: str) -> torch.Tensor:
        """Pooled (B, E) float32 vectors, as the original VirNucPro pools this model."""
        pool = pool_packed if isinstance(batch, PackedBatch) else pool_padded
        return pool(self.hidden_states(batch, backend), batch, self.pooling_window)
