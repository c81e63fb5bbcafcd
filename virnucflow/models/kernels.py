"""Triton kernels for the GPU fast path (fused elementwise passes), each beside its PyTorch reference.

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

The packed attention kernel (the ``triton`` backend, which can also apply the
rotary embedding as it loads q and k) is in :mod:`.attention_kernel`; the FP8
row quantisation in :mod:`.fp8`.

Each public function runs the Triton kernel on CUDA tensors (or anywhere under
``TRITON_INTERPRET=1``, which the CPU tests use) and the PyTorch reference
otherwise; ``VIRNUCFLOW_TRITON=0`` forces the reference.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

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


def add_layer_norm_reference(x, y, weight, bias, eps):
    if y is None:  # the norm alone
        return x, F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    if y.ndim == 1:  # one row for all (ESM2's folded residual): x + y normalised in FP32, unrounded
        s = x.float() + y.float()
        return s.to(x.dtype), F.layer_norm(s, (s.shape[-1],), weight.float(), bias.float(), eps).to(x.dtype)
    s = x + y
    return s, F.layer_norm(s, (s.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------- kernels


@functools.lru_cache(maxsize=None)
def _kernels():
    triton, tl = _triton()  # noqa: F841

    @triton.jit
    def rotary_inplace_kernel(qkv, cos, sin, T, stride_row, NQK: tl.constexpr, D: tl.constexpr,
                              BLOCK_T: tl.constexpr, HEADS: tl.constexpr):
        # program: BLOCK_T tokens x HEADS of the 2H q and k heads (q's heads then k's, D apart),
        # rotated where they are; the tokens' cos/sin rows are read once for all HEADS
        pid_t = tl.program_id(0)
        half: tl.constexpr = D // 2
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        heads = tl.program_id(1) * HEADS + tl.arange(0, HEADS)
        cols = tl.arange(0, half)
        row_ok = rows < T
        mask = row_ok[:, None, None] & (heads < NQK)[None, :, None]
        ptr = qkv + rows[:, None, None] * stride_row + heads[None, :, None] * D + cols[None, None, :]
        x1 = tl.load(ptr, mask=mask).to(tl.float32)
        x2 = tl.load(ptr + half, mask=mask).to(tl.float32)
        table = rows[:, None] * D + cols[None, :]
        c = tl.load(cos + table, mask=row_ok[:, None])[:, None, :]
        s = tl.load(sin + table, mask=row_ok[:, None])[:, None, :]
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
                      WRITE_SUM: tl.constexpr, QUANT: tl.constexpr, Y_ROW: tl.constexpr, HAS_Y: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < E
        y_at = y + row * E + cols if Y_ROW else y + cols  # y: a row per row, or one row for all
        s = tl.load(x + row * E + cols, mask=mask).to(tl.float32)
        if HAS_Y:
            s += tl.load(y_at, mask=mask).to(tl.float32)
        if Y_ROW and HAS_Y:
            s = s.to(s_out.dtype.element_ty)  # the stored residual, as the unfused add rounds it
        # (one row for all: x + that row is normalised unrounded; rounding it would add an error
        # that the stream x itself does not carry)
        if WRITE_SUM and HAS_Y:
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

    return SimpleNamespace(cdiv=triton.cdiv, next_power_of_2=triton.next_power_of_2,
                           rotary_inplace=rotary_inplace_kernel, geglu=geglu_kernel,
                           add_ln=add_ln_kernel)


# --------------------------------------------------------------------------- public


#: rotary_qk_inplace's tiles: tokens and q/k heads per program (benchmarks/esm2_gemm_probe.py times others)
ROTARY_BLOCK_T, ROTARY_HEADS, ROTARY_WARPS = 16, 16, 4


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
        block_t, per_program = ROTARY_BLOCK_T, min(ROTARY_HEADS, k.next_power_of_2(2 * heads))
        k.rotary_inplace[(k.cdiv(t, block_t), k.cdiv(2 * heads, per_program))](
            qkv, cos.contiguous(), sin.contiguous(), t, qkv.stride(0), NQK=2 * heads, D=d, BLOCK_T=block_t,
            HEADS=per_program, num_warps=ROTARY_WARPS)
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


ADD_LN_WARPS = 4  # per row (Triton's default; benchmarks/profile_esm2_layer.py times 4, 8 and 16)


def add_layer_norm_runs_fused(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether :func:`add_layer_norm` runs its Triton kernel on these rows (else the PyTorch reference)."""
    return use_triton(x) and x.ndim == 2 and x.is_contiguous() and (y is None or y.is_contiguous())


def add_layer_norm(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   write_sum: bool = True, quantized_out: tuple[torch.Tensor, torch.Tensor] | None = None):
    """``s = x + y`` and ``LayerNorm(s)``; returns ``(s, ln)`` (``s`` is None without ``write_sum``).
    ``y`` is (M, E) like ``x`` (``s`` rounded to x's dtype before the norm, as an unfused add rounds
    it) or one (E,) row added to every row (ESM-2's folded residual: the bias row; ``s`` normalised
    in FP32 as it is, the stream ``x`` being what is stored), or None: the norm of ``x`` alone
    (``s`` is then ``x``).

    ``quantized_out`` (Triton only, see :func:`add_layer_norm_runs_fused`): an (M, E) E4M3 and an
    (M, 1) float32 tensor that receive the normalised rows quantised per row (``ln`` is then None):
    what ``virnucflow.models.fp8.add_layer_norm_quantized`` asks for.
    """
    if not add_layer_norm_runs_fused(x, y):
        if quantized_out is not None:
            raise ValueError("quantised rows come from the Triton kernel only")
        s, n = add_layer_norm_reference(x, y, weight, bias, eps)
        return (s if write_sum else None), n
    k = _kernels()
    rows, e = x.shape
    s = torch.empty_like(x) if write_sum and y is not None else x  # x itself when nothing is added
    if quantized_out is not None:
        n = None
        n_out, scale_out = quantized_out
    else:
        n = n_out = torch.empty_like(x)
        scale_out = n_out  # unused
    k.add_ln[(rows,)](x, x if y is None else y, weight, bias, s, n_out, scale_out, eps, E=e, BLOCK=k.next_power_of_2(e),
                      WRITE_SUM=write_sum, QUANT=quantized_out is not None, Y_ROW=y is not None and y.ndim == 2,
                      HAS_Y=y is not None, num_warps=ADD_LN_WARPS)
    return (s if write_sum else None), n
