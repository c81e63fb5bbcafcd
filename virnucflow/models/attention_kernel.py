"""Packed (varlen) attention in one Triton kernel, beside its PyTorch reference: the ``triton`` attention backend.

:func:`varlen_attention` runs attention within each sequence of a packed
batch (FlashAttention's online softmax, optional ALiBi). It is faster than
FlexAttention and PyTorch's varlen FlashAttention on these models' short
sequences (``benchmarks/attention_kernels.py``) and, unlike FlexAttention,
needs no ``torch.compile``.

With ``rotary=(cos, sin)`` (ESM-2's fused path) the kernel applies the rotary
embedding to q and k as it loads them, in FP32, rounded to the inputs' dtype
as the separate in-place pass (:func:`kernels.rotary_qk_inplace`) rounds them:
one pass over q and k less per layer. q and k are loaded as two halves
(contiguous loads; q.k is the sum of the halves' products, two tensor-core
products of D/2), so head sizes of 32-256 (powers of two) only. The tables
are per position within a sequence (positions restart at 0 on each
sequence's first token): every program reads the same few kilobytes, from
L1. Keys are rotated once per block of queries that reads them.

Like the other kernels it runs on CUDA tensors, or anywhere under
``TRITON_INTERPRET=1`` (the CPU tests); the reference runs otherwise.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from .kernels import _triton, rotary_reference, use_triton

LOG2E = 1.4426950408889634
ATTENTION_BLOCK_M = 64  # queries per program: DNABERT-S's ~100-token windows fill two
ATTENTION_BLOCK_N = 64  # keys per step of the online softmax
ATTENTION_WARPS = 4


def varlen_attention_reference(q, k, v, cu_seqlens, scale, alibi_slopes=None, rotary=None):
    """Attention within each packed sequence, one at a time: q and k rotated first (``rotary``:
    (P, D) FP32 cos and sin per position within a sequence, fair-esm's rotate-half), FP32 scores
    (plus ALiBi's ``-slope[h] * |i - j|``), FP32 softmax, the weighted sum in FP32, cast back."""
    out = torch.zeros_like(q)
    cu = cu_seqlens.tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        qs, ks = q[a:b], k[a:b]
        if rotary is not None:
            cos, sin = (t[: b - a, None, :] for t in rotary)
            qs, ks = rotary_reference(qs, cos, sin), rotary_reference(ks, cos, sin)
        qh, kh, vh = (t.transpose(0, 1).float() for t in (qs, ks, v[a:b]))  # (H, L, D)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
        if alibi_slopes is not None:
            pos = torch.arange(b - a, device=q.device)
            scores = scores - alibi_slopes.float()[:, None, None] * (pos[None, :] - pos[:, None]).abs()
        out[a:b] = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(0, 1).to(q.dtype)
    return out


try:  # Triton comes with PyTorch on Linux; without it the reference runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

if triton is not None:

    @triton.jit
    def _rotated_halves(row_ptrs, positions, ok, cos, sin, D: tl.constexpr):
        # the two halves of (rows, D) q or k, rotated: x1*cos - x2*sin and x2*cos + x1*sin in FP32,
        # rounded to the inputs' dtype; contiguous loads only (the tables come from L1)
        half: tl.constexpr = D // 2
        hd = tl.arange(0, half)
        m = ok[:, None]
        x1 = tl.load(row_ptrs + hd[None, :], mask=m, other=0.0)
        x2 = tl.load(row_ptrs + half + hd[None, :], mask=m, other=0.0)
        c = tl.load(cos + positions[:, None] * D + hd[None, :], mask=m, other=0.0)
        s = tl.load(sin + positions[:, None] * D + hd[None, :], mask=m, other=0.0)
        a, b = x1.to(tl.float32), x2.to(tl.float32)
        return (a * c - b * s).to(x1.dtype), (b * c + a * s).to(x1.dtype)

    @triton.jit
    def _scores(qb, kb, IEEE: tl.constexpr):
        if IEEE:  # FP32 inputs: full-precision products, not TF32
            return tl.dot(qb, tl.trans(kb), input_precision="ieee")
        else:
            return tl.dot(qb, tl.trans(kb))


@functools.lru_cache(maxsize=None)
def _kernels():
    triton, tl = _triton()  # noqa: F841

    @triton.jit(do_not_specialize=["n_qblocks"])
    def varlen_attention_kernel(q, k, v, out, cu, slopes, cos, sin, qk_scale, n_qblocks,
                                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                                D: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                ALIBI: tl.constexpr, ROTARY: tl.constexpr, IEEE: tl.constexpr):
        # program: BLOCK_M queries of one sequence x one head, over that sequence's keys only
        # (online softmax in base 2: qk_scale and the ALiBi slope carry the factor log2(e))
        pid = tl.program_id(0)
        head = tl.program_id(1)
        seq = pid // n_qblocks
        m0 = (pid % n_qblocks) * BLOCK_M
        start = tl.load(cu + seq)
        length = tl.load(cu + seq + 1) - start
        if m0 < length:
            rows = m0 + tl.arange(0, BLOCK_M)
            dims = tl.arange(0, DP)  # the head size padded to a power of two (ESM-2 35M: 24 -> 32)
            row_ok = rows < length
            if DP == D:  # no padded columns: the masks are by row only (the kernel as measured)
                row_mask = row_ok[:, None]
            else:
                row_mask = row_ok[:, None] & (dims < D)[None, :]
            q_rows = q + (start + rows)[:, None] * stride_qt + head * stride_qh
            if ROTARY:  # (positions restart at 0 on each sequence: a row's position is its index)
                q1, q2 = _rotated_halves(q_rows, rows, row_ok, cos, sin, D)
            else:
                qb = tl.load(q_rows + dims[None, :], mask=row_mask, other=0.0)
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, DP], tl.float32)
            if ALIBI:
                slope = tl.load(slopes + head)
            for n0 in range(0, length, BLOCK_N):
                cols = n0 + tl.arange(0, BLOCK_N)
                col_ok = cols < length
                if DP == D:
                    col_mask = col_ok[:, None]
                else:
                    col_mask = col_ok[:, None] & (dims < D)[None, :]
                k_rows = k + (start + cols)[:, None] * stride_kt + head * stride_kh
                if ROTARY:  # q.k as the sum of the two halves' products
                    k1, k2 = _rotated_halves(k_rows, cols, col_ok, cos, sin, D)
                    s = (_scores(q1, k1, IEEE) + _scores(q2, k2, IEEE)) * qk_scale
                else:
                    kb = tl.load(k_rows + dims[None, :], mask=col_mask, other=0.0)
                    s = _scores(qb, kb, IEEE) * qk_scale
                if ALIBI:
                    s = s - slope * tl.abs(rows[:, None] - cols[None, :]).to(tl.float32)
                s = tl.where(col_ok[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                alpha = tl.math.exp2(m_i - m_new)
                p = tl.math.exp2(s - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                vb = tl.load(v + (start + cols)[:, None] * stride_vt + head * stride_vh + dims[None, :],
                             mask=col_mask, other=0.0)
                if IEEE:
                    acc = acc * alpha[:, None] + tl.dot(p, vb, input_precision="ieee")
                else:
                    acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb)
                m_i = m_new
            acc = acc / l_i[:, None]
            tl.store(out + (start + rows)[:, None] * stride_ot + head * stride_oh + dims[None, :],
                     acc.to(out.dtype.element_ty), mask=row_mask)

    return SimpleNamespace(cdiv=triton.cdiv, next_power_of_2=triton.next_power_of_2,
                           varlen_attention=varlen_attention_kernel)


def rotary_fits(head_dim: int) -> bool:
    """Whether the kernel can rotate heads of this size (halves of 16 or more, powers of two:
    each half is one operand of a tensor-core product)."""
    return head_dim in (32, 64, 128, 256)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                     scale: float, alibi_slopes: torch.Tensor | None = None, pad_tail: int = 0,
                     rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """FlashAttention-style attention over a packed batch: (T, H, D) x3 (strided rows allowed)
    -> (T, H, D); tokens attend within their ``cu_seqlens`` sequence only, with ALiBi's
    ``-slope[h] * |i - j|`` added to the scores when ``alibi_slopes`` (H,) is given, and q and
    k rotated as they are loaded when ``rotary`` ((P, D) FP32 cos and sin per position within a
    sequence, P >= max_seqlen) is given.

    One Triton kernel, compiled by Triton's JIT (no torch.compile, no Inductor): FP32
    scores, ALiBi and online softmax, FP32 accumulation of the products (the softmax
    weights rounded to the inputs' dtype for the product with V, as FlashAttention
    does; FP32 inputs are multiplied in full FP32, not TF32). Tokens after
    ``cu_seqlens[-1]`` (``pad_tail`` of them: a batch's filler) come out as zeros.
    """
    if not use_triton(q):
        return varlen_attention_reference(q, k, v, cu_seqlens, scale, alibi_slopes, rotary)
    t, heads, d = q.shape
    if any(x.stride(-1) != 1 for x in (q, k, v)):
        raise ValueError("varlen_attention needs q, k and v with unit stride along the head dimension")
    kn = _kernels()
    out = torch.empty((t, heads, d), dtype=q.dtype, device=q.device)
    if pad_tail:
        out[t - pad_tail:] = 0
    n_seq = cu_seqlens.numel() - 1
    n_qblocks = kn.cdiv(max(int(max_seqlen), 1), ATTENTION_BLOCK_M)
    slopes = (alibi_slopes.float().contiguous() * LOG2E) if alibi_slopes is not None else cu_seqlens  # unused if not
    if rotary is not None:
        if not rotary_fits(d):
            raise ValueError(f"the kernel rotates heads of 32, 64, 128 or 256 only, not {d}")
        cos, sin = (x.float().contiguous() for x in rotary)
        if cos.shape[0] < max_seqlen or cos.shape[1:] != (d,) or sin.shape != cos.shape:
            raise ValueError(f"rotary tables must be (>= {max_seqlen}, {d}), got {tuple(cos.shape)} and {tuple(sin.shape)}")
    else:
        cos = sin = slopes  # unused
    kn.varlen_attention[(n_seq * n_qblocks, heads)](
        q, k, v, out, cu_seqlens, slopes, cos, sin, scale * LOG2E, n_qblocks,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        D=d, DP=max(16, kn.next_power_of_2(d)), BLOCK_M=ATTENTION_BLOCK_M, BLOCK_N=ATTENTION_BLOCK_N,
        ALIBI=alibi_slopes is not None, ROTARY=rotary is not None, IEEE=q.dtype == torch.float32,
        num_warps=ATTENTION_WARPS)
    return out
