"""Token-budget batching, packed and padded, shared by both models.

Packed batches concatenate sequences without padding (``tokens`` (T,),
``cu_seqlens`` (B+1,) int32, as FlashAttention's varlen kernels take them);
padded batches are the classic (B, L) layout of the reference path. Both are
planned from sequence lengths alone, sorted longest first:

- :func:`plan_packed` is best-fit decreasing into bins of ``budget`` tokens
  (each sequence goes to the fullest bin it still fits in), which leaves only
  the last few bins partly empty;
- :func:`plan_padded` groups length-sorted sequences while ``B * L_max`` stays
  within the budget, as fair-esm's ``get_batch_indices`` does.

Batches are built on the CPU (in the engine's prefetch thread) as pinned
tensors, so moving them to the GPU is one asynchronous copy each.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch


def plan_packed(lengths: Sequence[int], budget: int) -> list[np.ndarray]:
    """Group sequence indices into bins of at most ``budget`` tokens.

    A sequence longer than the budget gets a bin of its own. Bins come out
    longest sequences first; within a bin, indices are in decreasing length.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    # open bins by remaining capacity: parallel sorted lists
    remaining: list[int] = []
    bin_of: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n > budget:
            bins.append([int(i)])
            continue
        k = bisect.bisect_left(remaining, n)
        if k == len(remaining):
            bins.append([int(i)])
            b, left = len(bins) - 1, budget - n
        else:
            b, left = bin_of.pop(k), remaining.pop(k) - n
            bins[b].append(int(i))
        if left > 0:
            j = bisect.bisect_left(remaining, left)
            remaining.insert(j, left)
            bin_of.insert(j, b)
    return [np.asarray(b, dtype=np.int64) for b in bins]


def plan_padded(lengths: Sequence[int], budget: int) -> list[np.ndarray]:
    """Group length-sorted sequences so that ``len(batch) * max_len <= budget``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        n = int(lengths[i])
        if current and max(longest, n) * (len(current) + 1) > budget:
            batches.append(np.asarray(current, dtype=np.int64))
            current, longest = [], 0
        current.append(int(i))
        longest = max(longest, n)
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


@dataclass
class PackedBatch:
    """Sequences concatenated without padding.

    ``tokens`` may end with ``pad_tail`` filler tokens after ``cu_seqlens[-1]``
    (to give every batch the same shape); they belong to no sequence.
    """

    items: np.ndarray  # (B,) indices into the caller's sequence list
    tokens: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (B+1,) int32
    positions: torch.Tensor  # (T,) int64, 0 at each sequence's first token
    segments: torch.Tensor  # (T,) int32, sequence number within the batch (>= B for filler)
    max_seqlen: int
    pad_tail: int = 0
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (B,) host copy

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def seqlens(self) -> torch.Tensor:
        """(B,) int64 sequence lengths on the batch's device."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """(T_real, ...) per-token values -> (B, ...) per-sequence sums.

        Each sequence is a contiguous run, summed in a fixed order: the same
        batch gives the same bits run after run (``index_add_`` on CUDA adds
        with atomics, in no fixed order).
        """
        return torch.segment_reduce(values, "sum", lengths=self.seqlens(), axis=0, unsafe=True)

    def to(self, device: torch.device, non_blocking: bool = True) -> "PackedBatch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)
        return PackedBatch(
            self.items, mv(self.tokens), mv(self.cu_seqlens), mv(self.positions), mv(self.segments),
            self.max_seqlen, self.pad_tail, self.lengths,
        )


@dataclass
class PaddedBatch:
    """Sequences right-padded to the longest one: ``tokens`` (B, L)."""

    items: np.ndarray
    tokens: torch.Tensor  # (B, L) int64
    lengths: torch.Tensor  # (B,) int64
    pad_id: int

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def mask(self) -> torch.Tensor:  # (B, L) True at real tokens
        return torch.arange(self.tokens.shape[1], device=self.tokens.device)[None, :] < self.lengths[:, None]

    def to(self, device: torch.device, non_blocking: bool = True) -> "PaddedBatch":
        return PaddedBatch(
            self.items, self.tokens.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking), self.pad_id,
        )


def _maybe_pin(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin else t


def make_packed(
    token_lists: Sequence[np.ndarray], items: np.ndarray, pad_to: int | None = None, filler: int = 0, pin: bool = False
) -> PackedBatch:
    """Concatenate ``token_lists[i] for i in items`` into a packed batch.

    With ``pad_to``, filler tokens are appended up to that many tokens (only
    when the batch is shorter), so batches can share one shape.
    """
    seqs = [np.asarray(token_lists[i]) for i in items]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    total = int(lengths.sum())
    tail = max(0, (pad_to or 0) - total)
    tokens = np.concatenate(seqs + [np.full(tail, filler, dtype=np.int64)]).astype(np.int64, copy=False)
    cu = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    # Filler tokens form pseudo-sequences of at most 128 tokens (ids B, B+1, ...), so
    # that attending among themselves costs next to nothing.
    filler = np.arange(tail)
    segments = np.concatenate([np.repeat(np.arange(len(seqs), dtype=np.int32), lengths),
                               (len(seqs) + filler // 128).astype(np.int32)])
    positions = np.arange(total + tail, dtype=np.int64)
    positions[:total] -= np.repeat(cu[:-1].astype(np.int64), lengths)
    positions[total:] = filler % 128
    return PackedBatch(
        items=np.asarray(items),
        tokens=_maybe_pin(torch.from_numpy(tokens), pin),
        cu_seqlens=_maybe_pin(torch.from_numpy(cu), pin),
        positions=_maybe_pin(torch.from_numpy(positions), pin),
        segments=_maybe_pin(torch.from_numpy(segments), pin),
        max_seqlen=int(lengths.max(initial=0)),
        pad_tail=tail,
        lengths=lengths,
    )


def make_padded(token_lists: Sequence[np.ndarray], items: np.ndarray, pad_id: int, pin: bool = False) -> PaddedBatch:
    seqs = [np.asarray(token_lists[i]) for i in items]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    tokens = np.full((len(seqs), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        tokens[row, : len(s)] = s
    return PaddedBatch(
        np.asarray(items), _maybe_pin(torch.from_numpy(tokens), pin), _maybe_pin(torch.from_numpy(lengths), pin), pad_id
    )


def packing_efficiency(lengths: Sequence[int], batches: Sequence[np.ndarray], budget: int, padded: bool) -> float:
    """Real tokens over the tokens the batches occupy (budget per packed batch; B*L_max per padded one)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = sum(int(lengths[b].sum()) for b in batches)
    if padded:
        occupied = sum(len(b) * int(lengths[b].max()) for b in batches)
    else:
        occupied = sum(max(budget, int(lengths[b].sum())) for b in batches)
    return real / occupied if occupied else 1.0
