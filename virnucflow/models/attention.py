"""Attention backends for packed and padded batches, shared by both models.

Packed batches (``q, k, v``: (T, H, D), sequences delimited by ``cu_seqlens``):

- ``varlen``: PyTorch's built-in FlashAttention for variable-length batches,
  ``torch.nn.attention.varlen.varlen_attn`` (PyTorch >= 2.10; CUDA, fp16/bf16;
  no attention bias, so not for ALiBi);
- ``flash_attn``: ``flash_attn.flash_attn_varlen_func`` from the optional
  flash-attn package (CUDA, fp16/bf16; supports ALiBi slopes);
- ``triton``: this package's FlashAttention-style Triton kernel
  (``attention_kernel.varlen_attention``; CUDA, fp16/bf16; ALiBi slopes in the kernel),
  compiled by Triton's JIT and cached on disk: no ``torch.compile``, so none of
  the 7-8 s that importing torch._dynamo and Inductor costs an embedding job
  before FlexAttention can run;
- ``flex``: FlexAttention with a document mask and, for DNABERT-S, an ALiBi
  ``score_mod`` computed in the kernel (CUDA; any dtype); the block mask is
  built once per batch and shared by all layers, the kernel compiled once per
  process;
- ``sdpa``: the portable fallback (CPU or GPU, any dtype): the packed tokens are
  gathered per sequence and ``scaled_dot_product_attention`` runs with a mask
  that only lets tokens of the same sequence see each other, i.e. the
  block-diagonal attention of the packed batch, one block per row.

Padded batches ((B, L, H, D) with a key padding mask): ``sdpa`` or ``math``
(explicit matmul and FP32 softmax, the reference).

``auto`` picks the fastest backend that can run; an explicit choice that
cannot run on this device/dtype/model falls back with a warning naming both,
so every precision x packing x attention combination runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .packing import PackedBatch

log = logging.getLogger("virnucflow")

PACKED_BACKENDS = ("varlen", "flash_attn", "triton", "flex", "sdpa")
PADDED_BACKENDS = ("sdpa", "math")
ALL_BACKENDS = ("auto",) + PACKED_BACKENDS + ("math",)


# --------------------------------------------------------------------------- ALiBi


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes in DNABERT-2's (MosaicBERT's) order.

    For a power of two n: ``start = 2**(-8/n)`` and slopes ``start**1..n``.
    Otherwise the slopes for the largest power of two c < n, followed by every
    other slope of the 2c list, ``[0::2][:n-c]``. For 12 heads: 2^-1 ... 2^-8,
    then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (not monotone; the order matters).
    """

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    c = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(c) + alibi_slopes(2 * c)[0::2][: n_heads - c]


def alibi_bias(slopes: torch.Tensor, length: int) -> torch.Tensor:
    """(H, L, L) float32 bias ``-slope[h] * |i - j|``."""
    pos = torch.arange(length, device=slopes.device)
    dist = (pos[None, :] - pos[:, None]).abs().float()
    return -slopes.float()[:, None, None] * dist


# --------------------------------------------------------------------------- availability


@functools.lru_cache(maxsize=None)
def _varlen_fn() -> Callable | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "scale" not in params:  # pre-release signatures without a softmax scale
        return None
    return varlen_attn


@functools.lru_cache(maxsize=None)
def _flash_attn_fn() -> Callable | None:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


@functools.lru_cache(maxsize=None)
def _flex_fn() -> Callable | None:
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return torch.compile(flex_attention, dynamic=False)


def can_run(backend: str, device: torch.device, dtype: torch.dtype, alibi: bool, packed: bool) -> str | None:
    """None if ``backend`` can run here, else the reason it cannot.

    The device, dtype and model are asked before any import is tried: importing
    varlen_attn or building FlexAttention imports torch._dynamo and Inductor, seconds
    that a CPU job (which uses neither) must not pay.
    """
    cuda = device.type == "cuda"
    half = dtype in (torch.float16, torch.bfloat16)
    if packed and backend == "math":
        return "math is the padded reference path"
    if not packed and backend not in PADDED_BACKENDS:
        return f"{backend} needs packed batches"
    if backend == "varlen":
        if not cuda or not half:
            return "varlen_attn needs a CUDA GPU and fp16/bf16"
        if alibi:
            return "varlen_attn has no attention bias, so it cannot apply DNABERT-S's ALiBi"
        if _varlen_fn() is None:
            return "torch.nn.attention.varlen.varlen_attn is not available in this PyTorch"
    if backend == "flash_attn":
        if not cuda or not half:
            return "flash-attn needs a CUDA GPU and fp16/bf16"
        if _flash_attn_fn() is None:
            return "the flash-attn package is not installed"
    if backend == "triton":
        if not cuda or not half:
            return "the Triton attention kernel needs a CUDA GPU and fp16/bf16"
        from .kernels import _triton

        if _triton() is None:
            return "Triton is not installed"
    if backend == "flex":
        if not cuda:
            return "FlexAttention is only used on CUDA GPUs here"
        if _flex_fn() is None:
            return "FlexAttention is not available in this PyTorch"
    return None


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype, alibi: bool, packed: bool) -> str:
    """The backend to use: ``requested`` if it can run, else the best that can."""
    if requested not in ALL_BACKENDS:
        raise ValueError(f"attention must be one of {', '.join(ALL_BACKENDS)}, got {requested!r}")
    half = dtype in (torch.float16, torch.bfloat16)
    if packed:
        # the Triton kernel first: on an H200 at the engine's budgets it took 0.24 ms against
        # FlexAttention's 0.95 (DNABERT-S, 65,536 tokens) and 0.34 ms against varlen_attn's
        # 0.63 (ESM-2, 32,768 tokens), and it needs no torch.compile (benchmarks/attention_kernels.py)
        order = ("triton", "flash_attn", "flex", "sdpa") if alibi else ("triton", "varlen", "flash_attn", "flex", "sdpa")
    elif alibi and half:
        # SDPA takes the ALiBi bias in the inputs' dtype (bf16 rounds 65.0 to 0.25 steps):
        # the math path keeps scores, bias and softmax in FP32.
        order = ("math", "sdpa")
    else:
        order = ("sdpa", "math") if device.type == "cuda" else ("math", "sdpa")
    if requested != "auto":
        reason = can_run(requested, device, dtype, alibi, packed)
        if reason is None:
            return requested
        chosen = next(b for b in order if can_run(b, device, dtype, alibi, packed) is None)
        log.warning("attention backend %s cannot run (%s): using %s", requested, reason, chosen)
        return chosen
    return next(b for b in order if can_run(b, device, dtype, alibi, packed) is None)


# --------------------------------------------------------------------------- packed


class PackedAttention:
    """Attention over one packed batch; state built once and shared by all layers."""

    def __init__(self, backend: str, batch: PackedBatch, num_heads: int, alibi: torch.Tensor | None = None):
        if backend not in PACKED_BACKENDS:
            raise ValueError(f"{backend!r} is not a packed attention backend (use one of {', '.join(PACKED_BACKENDS)})")
        self.backend = backend
        self.batch = batch
        self.alibi = alibi  # (H,) float32 slopes or None
        self.num_heads = num_heads
        self.max_seqlen = batch.max_seqlen
        self.cu = batch.cu_seqlens
        if backend == "flex":
            self._block_mask = document_block_mask(batch)
            self._score_mod = _alibi_score_mod(alibi) if alibi is not None else None
        elif backend == "sdpa":
            self._init_sdpa()

    def rotates_inside(self, head_dim: int) -> bool:
        """Whether this backend's kernel applies the rotary embedding as it loads q and k."""
        from .attention_kernel import rotary_fits

        return self.backend == "triton" and rotary_fits(head_dim)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                 rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(T, H, D) x3 -> (T, H, D); ``rotary`` ((T, D) cos and sin per token, backends that
        :meth:`rotates_inside` only) rotates q and k inside the kernel."""
        if rotary is not None and not self.rotates_inside(q.shape[-1]):
            raise ValueError(f"the {self.backend} attention backend cannot apply the rotary embedding")
        if self.backend == "varlen":
            return _varlen_fn()(q, k, v, self.cu, self.cu, self.max_seqlen, self.max_seqlen, scale=scale)
        if self.backend == "flash_attn":
            slopes = self.alibi.float() if self.alibi is not None else None
            return _flash_attn_fn()(
                q, k, v, self.cu, self.cu, self.max_seqlen, self.max_seqlen,
                dropout_p=0.0, softmax_scale=scale, causal=False, alibi_slopes=slopes,
            )
        if self.backend == "triton":
            from .attention_kernel import varlen_attention

            return varlen_attention(q, k, v, self.cu, self.max_seqlen, scale, self.alibi, pad_tail=self.batch.pad_tail,
                                    rotary=rotary)
        if self.backend == "flex":
            # (T, H, D) -> (1, H, T, D)
            qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out = _flex_fn()(qh, kh, vh, score_mod=self._score_mod, block_mask=self._block_mask, scale=scale)
            return out.squeeze(0).transpose(0, 1)
        return self._sdpa(q, k, v, scale)

    # The SDPA fallback gathers each sequence into a row of a (B, L_max) grid.
    def _init_sdpa(self) -> None:
        b = self.batch
        n = len(b.lengths)
        total = b.num_tokens
        device = b.tokens.device
        seg = b.segments[:total].long()
        pos = b.positions[:total]
        self._flat_index = seg * self.max_seqlen + pos  # (T_real,)
        lengths = torch.as_tensor(b.lengths, device=device)
        key_ok = torch.arange(self.max_seqlen, device=device)[None, :] < lengths[:, None]  # (B, L)
        mask = torch.zeros((n, 1, 1, self.max_seqlen), device=device, dtype=torch.float32)
        mask.masked_fill_(~key_ok[:, None, None, :], float("-inf"))
        if self.alibi is not None:
            mask = mask + alibi_bias(self.alibi.to(device), self.max_seqlen)[None]  # (B, H, L, L)
        self._mask = mask
        self._shape = (n, self.max_seqlen)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        n, length = self._shape
        total = self._flat_index.shape[0]
        heads, dim = q.shape[1:]

        def grid(t: torch.Tensor) -> torch.Tensor:  # (T, H, D) -> (B, H, L, D)
            g = t.new_zeros((n * length, heads, dim))
            g.index_copy_(0, self._flat_index, t[:total])
            return g.view(n, length, heads, dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(grid(q), grid(k), grid(v), attn_mask=self._mask.to(q.dtype), scale=scale)
        out = out.transpose(1, 2).reshape(n * length, heads, dim).index_select(0, self._flat_index)
        if q.shape[0] > total:  # filler tokens: attend to nothing, output zeros
            out = torch.cat([out, out.new_zeros((q.shape[0] - total, heads, dim))])
        return out


FLEX_BLOCK = 128


def document_block_mask(batch: PackedBatch):
    """FlexAttention BlockMask letting tokens attend within their own sequence only.

    Built directly from the batch layout (no evaluation of the mask over the
    T x T grid): query block ``qb`` can only see the key blocks spanning the
    sequences that ``qb`` touches; blocks entirely inside one sequence on both
    sides are "full" (no mask evaluation in the kernel), the others partial.
    """
    from torch.nn.attention.flex_attention import BlockMask

    seg, pos = batch.segments, batch.positions
    device = seg.device
    t = seg.shape[0]
    n = len(batch.lengths)
    nb = -(-t // FLEX_BLOCK)
    idx = torch.arange(t, device=device)
    start = idx - pos  # first token of each token's sequence
    real = seg < n
    cu = batch.cu_seqlens.long()
    segc = seg.long().clamp(max=max(n - 1, 0))
    seq_len = torch.where(real, cu[segc + 1] - cu[segc], (t - start).clamp(max=FLEX_BLOCK))
    end = start + seq_len  # one past the last token of each token's sequence
    first = torch.arange(nb, device=device) * FLEX_BLOCK
    last = (first + FLEX_BLOCK - 1).clamp(max=t - 1)
    kv_lo = start[first] // FLEX_BLOCK
    kv_hi = (end[last] - 1) // FLEX_BLOCK
    pure = (start[first] == start[last]) & (first + FLEX_BLOCK - 1 < t)  # one sequence, whole block
    longest = max(batch.max_seqlen, FLEX_BLOCK)
    span = (2 * longest + FLEX_BLOCK) // FLEX_BLOCK + 2  # host bound on key blocks per query block
    kb = kv_lo[:, None] + torch.arange(span, device=device)[None, :]  # (nb, span)
    valid = kb <= kv_hi[:, None]
    kbc = kb.clamp(max=nb - 1)
    full = valid & pure[:, None] & pure[kbc] & (start[first][:, None] == start[first][kbc])
    partial = valid & ~full

    def compact(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # kept blocks first, then padding; indices laid out (1, 1, nb, nb) as FlexAttention expects
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        idx = torch.zeros((nb, nb), dtype=torch.int32, device=device)
        width = min(span, nb)
        idx[:, :width] = kbc.gather(1, order)[:, :width].to(torch.int32)
        return keep.sum(1).to(torch.int32)[None, None], idx[None, None]

    kv_num, kv_idx = compact(partial)
    full_num, full_idx = compact(full)

    def same_sequence(b, h, q_idx, kv_idx):
        return seg[q_idx] == seg[kv_idx]

    # Inference only: the transposed (query-block) lists are needed for backward passes.
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=same_sequence, seq_lengths=(t, t), compute_q_blocks=False)


def _alibi_score_mod(slopes: torch.Tensor):
    slopes = slopes.float()

    def alibi(score, b, h, q_idx, kv_idx):
        # |i - j| is the same in packed and per-sequence positions.
        return score - slopes[h] * (q_idx - kv_idx).abs()

    return alibi


# --------------------------------------------------------------------------- padded


class PaddedAttention:
    """Attention over a padded batch (B, L, H, D) with a key padding mask."""

    def __init__(self, backend: str, mask: torch.Tensor, alibi: torch.Tensor | None = None):
        self.backend = backend
        length = mask.shape[1]
        bias = torch.zeros(mask.shape[0], 1, 1, length, device=mask.device, dtype=torch.float32)
        bias.masked_fill_(~mask[:, None, None, :], float("-inf"))
        if alibi is not None:
            bias = bias + alibi_bias(alibi.to(mask.device), length)[None]
        self.bias = bias  # (B, 1 or H, 1 or L, L) float32

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, L, H, D) x3 -> (B, L, H, D)."""
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
        if self.backend == "math":
            # the reference: scores, bias, softmax and the weighted sum in FP32
            scores = torch.matmul(qh.float(), kh.float().transpose(-1, -2)) * scale + self.bias
            out = torch.matmul(torch.softmax(scores, dim=-1), vh.float()).to(vh.dtype)
        else:
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=self.bias.to(q.dtype), scale=scale)
        return out.transpose(1, 2)
