"""Triton kernels for the GPU fast path (fused elementwise passes and packed attention), each beside its PyTorch reference.

The matrix products of both models run in cuBLAS near the GPU's limit; what
is left is memory-bound elementwise work between them and attention. Triton kernels
cut the passes over memory (measured on an H200 for ESM-2 3B at 32k tokens:
the eager rotary embedding alone cost 3.2 ms of an 11.7 ms layer; a Triton
erf-GELU was tried and was slower than PyTorch's, so GELU stays eager):

- :func:`rotary_qk_inplace`: rotate the q and k parts of a fused q|k|v
  projection (T, 3E) where they are (NeoX rotate-half, FP32 arithmetic,
  cos/sin per token) and return q, k, v as strided (T, H, D) views: the
  attention kernels read strided rows as fast as contiguous ones (measured),
  so no copies are made;
- :func:`geglu`: ``gelu(h[:, :I]) * h[:, I:]`` (erf GELU, FP32 arithmetic) in
  one pass;
- :func:`add_layer_norm`: ``s = x + y`` and ``LayerNorm(s)`` in one pass (FP32
  statistics), returning both (pre-LN) or only the normalised rows (post-LN);
- :func:`varlen_attention`: attention within each sequence of a packed batch
  (FlashAttention's online softmax, optional ALiBi), the ``triton`` attention
  backend: faster than FlexAttention and PyTorch's varlen FlashAttention on
  these models' short sequences (``benchmarks/attention_kernels.py``) and,
  unlike FlexAttention, no ``torch.compile``.

Each public function runs the Triton kernel on CUDA tensors (or anywhere under
``TRITON_INTERPRET=1``, which the CPU tests use) and the PyTorch reference
otherwise; ``VIRNUCFLOW_TRITON=0`` forces the reference.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace
from typing import NamedTuple

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def use_triton(t: torch.Tensor) -> bool:
    if os.environ.get("VIRNUCFLOW_TRITON", "1") == "0" or _triton() is None:
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


# --------------------------------------------------------------------------- references


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """fair-esm's apply_rotary_pos_emb in FP32: ``x*cos + rotate_half(x)*sin``."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def rotary_qkv_reference(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    t, three_e = qkv.shape
    e = three_e // 3
    q, k, v = qkv.view(t, 3, heads, e // heads).unbind(1)
    c, s = cos[:, None, :], sin[:, None, :]
    return rotary_reference(q, c, s), rotary_reference(k, c, s), v


def geglu_reference(h: torch.Tensor) -> torch.Tensor:
    gate, value = h.chunk(2, dim=-1)
    return F.gelu(gate) * value


def varlen_attention_reference(q, k, v, cu_seqlens, scale, alibi_slopes=None):
    """Attention within each packed sequence, one at a time: FP32 scores (plus ALiBi's
    ``-slope[h] * |i - j|``), FP32 softmax, the weighted sum in FP32, cast back."""
    out = torch.zeros_like(q)
    cu = cu_seqlens.tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        qh, kh, vh = (t[a:b].transpose(0, 1).float() for t in (q, k, v))  # (H, L, D)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
        if alibi_slopes is not None:
            pos = torch.arange(b - a, device=q.device)
            scores = scores - alibi_slopes.float()[:, None, None] * (pos[None, :] - pos[:, None]).abs()
        out[a:b] = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(0, 1).to(q.dtype)
    return out


def add_layer_norm_reference(x, y, weight, bias, eps):
    s = x + y
    return s, F.layer_norm(s, (s.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------- kernels


@functools.lru_cache(maxsize=None)
def _kernels():
    triton, tl = _triton()  # noqa: F841

    @triton.jit
    def rotary_inplace_kernel(qkv, cos, sin, T, stride_row, E: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr):
        # program: BLOCK_T tokens x one head x q or k, rotated where they are
        pid_t = tl.program_id(0)
        which = tl.program_id(1)
        head = tl.program_id(2)
        half: tl.constexpr = D // 2
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]
        cols = tl.arange(0, half)[None, :]
        mask = rows < T
        ptr = qkv + rows * stride_row + which * E + head * D + cols
        x1 = tl.load(ptr, mask=mask).to(tl.float32)
        x2 = tl.load(ptr + half, mask=mask).to(tl.float32)
        c = tl.load(cos + rows * D + cols, mask=mask)
        s = tl.load(sin + rows * D + cols, mask=mask)
        tl.store(ptr, (x1 * c - x2 * s).to(qkv.dtype.element_ty), mask=mask)
        tl.store(ptr + half, (x2 * c + x1 * s).to(qkv.dtype.element_ty), mask=mask)

    @triton.jit
    def geglu_kernel(h, out, n_rows, stride_row, I: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < I
        g = tl.load(h + row * stride_row + cols, mask=mask).to(tl.float32)
        v = tl.load(h + row * stride_row + I + cols, mask=mask).to(tl.float32)
        y = 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476)) * v
        tl.store(out + row * I + cols, y.to(out.dtype.element_ty), mask=mask)

    @triton.jit
    def add_ln_kernel(x, y, w, b, s_out, n_out, scale_out, eps, E: tl.constexpr, BLOCK: tl.constexpr,
                      WRITE_SUM: tl.constexpr, QUANT: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < E
        s = tl.load(x + row * E + cols, mask=mask).to(tl.float32) + tl.load(y + row * E + cols, mask=mask).to(tl.float32)
        s = s.to(s_out.dtype.element_ty)  # the stored residual, as the unfused add rounds it
        if WRITE_SUM:
            tl.store(s_out + row * E + cols, s, mask=mask)
        s = s.to(tl.float32)
        mean = tl.sum(s, axis=0) / E
        d = tl.where(mask, s - mean, 0.0)
        var = tl.sum(d * d, axis=0) / E
        inv = 1.0 / tl.sqrt(var + eps)
        wv = tl.load(w + cols, mask=mask).to(tl.float32)
        bv = tl.load(b + cols, mask=mask).to(tl.float32)
        n = d * inv * wv + bv
        if QUANT:
            # E4M3 rows for an FP8 product: the normalised row as the unfused path rounds it
            # (to the residual's dtype), scaled by its amax / 448
            n = tl.where(mask, n.to(s_out.dtype.element_ty).to(tl.float32), 0.0)
            scale = tl.maximum(tl.max(tl.abs(n), axis=0), 1e-12) / 448.0
            tl.store(scale_out + row, scale)
            n = tl.minimum(tl.maximum(n / scale, -448.0), 448.0)
        tl.store(n_out + row * E + cols, n.to(n_out.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["n_qblocks"])
    def varlen_attention_kernel(q, k, v, out, cu, slopes, qk_scale, n_qblocks,
                                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                                D: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                ALIBI: tl.constexpr, IEEE: tl.constexpr):
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
            qb = tl.load(q + (start + rows)[:, None] * stride_qt + head * stride_qh + dims[None, :],
                         mask=row_mask, other=0.0)
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
                kb = tl.load(k + (start + cols)[:, None] * stride_kt + head * stride_kh + dims[None, :],
                             mask=col_mask, other=0.0)
                if IEEE:  # FP32 inputs: full-precision products, not TF32
                    s = tl.dot(qb, tl.trans(kb), input_precision="ieee") * qk_scale
                else:
                    s = tl.dot(qb, tl.trans(kb)) * qk_scale
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
                           rotary_inplace=rotary_inplace_kernel, geglu=geglu_kernel,
                           add_ln=add_ln_kernel, varlen_attention=varlen_attention_kernel)


# --------------------------------------------------------------------------- public


def rotary_qk_inplace(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """Rotate the q and k parts of a fused (T, 3E) projection in place; return q, k, v
    as (T, H, D) views of it (no copies: the attention kernels take strided rows)."""
    t, three_e = qkv.shape
    e = three_e // 3
    d = e // heads
    if not use_triton(qkv):
        q, k, v = rotary_qkv_reference(qkv, cos, sin, heads)
        view = qkv.view(t, 3, heads, d)
        view[:, 0].copy_(q)
        view[:, 1].copy_(k)
    else:
        k = _kernels()
        block_t = 64
        k.rotary_inplace[(k.cdiv(t, block_t), 2, heads)](qkv, cos.contiguous(), sin.contiguous(), t, qkv.stride(0),
                                                     E=e, D=d, BLOCK_T=block_t)
    q, k, v = qkv.view(t, 3, heads, d).unbind(1)
    return q, k, v


def geglu(h: torch.Tensor) -> torch.Tensor:
    """(..., 2I) -> (..., I): ``gelu(first half) * second half``."""
    if not use_triton(h) or h.ndim != 2:
        return geglu_reference(h)
    k = _kernels()
    rows, two_i = h.shape
    i = two_i // 2
    out = torch.empty((rows, i), dtype=h.dtype, device=h.device)
    block = 1024
    k.geglu[(rows, k.cdiv(i, block))](h, out, rows, h.stride(0), I=i, BLOCK=block)
    return out


LOG2E = 1.4426950408889634
ATTENTION_BLOCK_M = 64  # queries per program: DNABERT-S's ~100-token windows fill two
ATTENTION_BLOCK_N = 64  # keys per step of the online softmax
ATTENTION_WARPS = 4


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                     scale: float, alibi_slopes: torch.Tensor | None = None, pad_tail: int = 0) -> torch.Tensor:
    """FlashAttention-style attention over a packed batch: (T, H, D) x3 (strided rows allowed)
    -> (T, H, D); tokens attend within their ``cu_seqlens`` sequence only, with ALiBi's
    ``-slope[h] * |i - j|`` added to the scores when ``alibi_slopes`` (H,) is given.

    One Triton kernel, compiled by Triton's JIT (no torch.compile, no Inductor): FP32
    scores, ALiBi and online softmax, FP32 accumulation of the products (the softmax
    weights rounded to the inputs' dtype for the product with V, as FlashAttention
    does; FP32 inputs are multiplied in full FP32, not TF32). Tokens after
    ``cu_seqlens[-1]`` (``pad_tail`` of them: a batch's filler) come out as zeros.
    """
    if not use_triton(q):
        return varlen_attention_reference(q, k, v, cu_seqlens, scale, alibi_slopes)
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
    kn.varlen_attention[(n_seq * n_qblocks, heads)](
        q, k, v, out, cu_seqlens, slopes, scale * LOG2E, n_qblocks,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        D=d, DP=max(16, kn.next_power_of_2(d)), BLOCK_M=ATTENTION_BLOCK_M, BLOCK_N=ATTENTION_BLOCK_N, ALIBI=alibi_slopes is not None,
        IEEE=q.dtype == torch.float32, num_warps=ATTENTION_WARPS)
    return out


class QuantizedRows(NamedTuple):
    """(M, K) E4M3 values and (M, 1) float32 scales: row ``i`` is ``q[i] * scale[i]``."""

    q: torch.Tensor
    scale: torch.Tensor


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   write_sum: bool = True, quantize: bool = False):
    """``s = x + y`` and ``LayerNorm(s)``; returns ``(s, ln)`` (``s`` is None without ``write_sum``).

    With ``quantize`` (2-D input; precision fp8) ``ln`` is :class:`QuantizedRows`: the
    normalised rows in E4M3 with one scale per row, for an ``Fp8Linear`` to read directly.
    """
    if not (use_triton(x) and x.ndim == 2 and x.is_contiguous() and y.is_contiguous()):
        s, n = add_layer_norm_reference(x, y, weight, bias, eps)
        if quantize:
            from .fp8 import quantize_rows_reference

            n = QuantizedRows(*quantize_rows_reference(n.reshape(-1, n.shape[-1])))
        return (s if write_sum else None), n
    k = _kernels()
    rows, e = x.shape
    s = torch.empty_like(x) if write_sum else x  # unused when not written
    if quantize:
        n = QuantizedRows(torch.empty((rows, e), dtype=torch.float8_e4m3fn, device=x.device),
                          torch.empty((rows, 1), dtype=torch.float32, device=x.device))
        n_out, scale_out = n
    else:
        n = n_out = torch.empty_like(x)
        scale_out = n_out  # unused
    k.add_ln[(rows,)](x, y, weight, bias, s, n_out, scale_out, eps, E=e, BLOCK=k.next_power_of_2(e),
                      WRITE_SUM=write_sum, QUANT=quantize)
    return (s if write_sum else None), n
