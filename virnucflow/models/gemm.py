"""FP16 linear layers with their elementwise work in the GEMM's epilogue (Triton, TMA loads).

``linear(x, w, b, ...)`` computes ``x @ w.T + b`` (FP32 accumulation) and, on
the FP32 accumulator before its one rounding to x's dtype, any of:

- ``gelu``: the erf GELU (ESM-2's fc1; exact, unlike cuBLASLt's tanh epilogue);
- ``rotary=(cos, sin, cols, head_dim)``: NeoX rotate-half of every head in the
  first ``cols`` output columns with per-row FP32 cos/sin tables (ESM-2's
  q|k|v projection: q and k rotated, v not);
- ``residual``: ``r + x @ w.T + b``, written into ``out`` (ESM-2's out_proj
  and fc2 with ``out=residual``: the residual stream updated in place, one
  rounding of the sum instead of two).

Tiles are read by TMA descriptors (out-of-range rows and columns read as zero
and are not written), and each program walks tiles ``NUM_PROGRAMS`` apart
(persistent when fewer programs than tiles), grouped ``GROUP_M`` row-tiles at
a time for L2 reuse (:data:`TILE`). ESM-2 can use the rotary epilogue
(``esm2.QKV_ROTARY_EPILOGUE``, off); the GELU and residual epilogues measured slower
than cuBLAS(Lt) and its passes on an H100 (``benchmarks/esm2_epilogue_gemm_probe.py``:
Triton's GEMMs ran at 625-690 TFLOP/s where cuBLAS ran at 700-737). The PyTorch reference
(:func:`linear_reference`) is what the CPU tests compare the kernel with,
under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .kernels import _triton, rotary_reference, use_triton


@dataclass(frozen=True)
class Tile:
    block_m: int = 128
    block_n: int = 256
    block_k: int = 64
    stages: int = 3
    warps: int = 8
    group_m: int = 8
    persistent: bool = True
    warp_specialize: bool = False


#: the tile, and the one with a residual epilogue (its tile read needs 64 KB more shared memory than
#: 128 x 256 x 3 stages leaves), chosen by benchmarks/esm2_epilogue_gemm_probe.py on an H100 for ESM-2
#: 3B's products (qkv with its rotary epilogue: 1.951 and 1.979 ms in two runs; warp-specialised 1.945
#: and 1.867, not taken: the GPU tests ran this tile)
TILE = Tile()
RESIDUAL_TILE = Tile(block_n=128, stages=4)


def linear_reference(x, w, b, gelu=False, rotary=None, residual=None):
    """The epilogues in PyTorch on the FP32 product (one rounding at the end)."""
    y = x.float() @ w.float().t() + b.float()
    if gelu:
        y = F.gelu(y)
    if rotary is not None:
        cos, sin, cols, d = rotary
        part = y[:, :cols].view(y.shape[0], cols // d, d)
        y[:, :cols] = rotary_reference(part, cos[:, None, :], sin[:, None, :]).view(y.shape[0], cols)
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


def runs_fused(x: torch.Tensor, w: torch.Tensor, rotary=None, tile: Tile = TILE) -> bool:
    """Whether :func:`linear` runs the Triton kernel on these operands: FP16 rows with 16-byte
    aligned strides, on a GPU or under the interpreter (BF16 is untested, so it is not taken), and
    ``rotary``'s columns in whole tiles of whole heads (half a head a power of two)."""
    if rotary is not None:
        cols, d = rotary[2], rotary[3]
        if cols % tile.block_n or tile.block_n % d or d % 2 or (d // 2) & (d // 2 - 1):
            return False
    return (use_triton(x) and x.ndim == 2 and x.dtype == torch.float16 and w.dtype == x.dtype
            and x.stride(1) == 1 and w.is_contiguous() and (x.stride(0) * x.element_size()) % 16 == 0
            and (w.shape[1] * w.element_size()) % 16 == 0)


@functools.lru_cache(maxsize=None)
def _kernel():
    triton, tl = _triton()

    @triton.jit
    def linear_kernel(a_desc, w_desc, c_desc, r_desc, bias, cos, sin, M, N, K, stride_cs,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                      NUM_PROGRAMS, STAGES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
                      GELU: tl.constexpr, RESIDUAL: tl.constexpr, ROTARY_COLS: tl.constexpr, HEAD_DIM: tl.constexpr):
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        k_steps = tl.cdiv(K, BLOCK_K)
        for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, NUM_PROGRAMS, flatten=True,
                             warp_specialize=WARP_SPECIALIZE):
            first_m = (tile // per_group) * GROUP_M
            rows_here = tl.minimum(tiles_m - first_m, GROUP_M)
            off_m = (first_m + (tile % per_group) % rows_here) * BLOCK_M
            off_n = ((tile % per_group) // rows_here) * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ki in tl.range(k_steps, num_stages=STAGES):
                a = a_desc.load([off_m, ki * BLOCK_K])
                w = w_desc.load([off_n, ki * BLOCK_K])
                acc = tl.dot(a, w.T, acc)
            cols = off_n + tl.arange(0, BLOCK_N)
            acc += tl.load(bias + cols, mask=cols < N).to(tl.float32)[None, :]
            if GELU:
                acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
            if ROTARY_COLS > 0:
                if off_n < ROTARY_COLS:  # a tile holds whole heads, all rotated or none (runs_fused checks)
                    half: tl.constexpr = HEAD_DIM // 2
                    rows = off_m + tl.arange(0, BLOCK_M)
                    at = rows[:, None] * stride_cs + tl.arange(0, half)[None, :]
                    c = tl.load(cos + at, mask=rows[:, None] < M)[:, None, :]
                    s = tl.load(sin + at, mask=rows[:, None] < M)[:, None, :]
                    x1, x2 = tl.split(acc.reshape(BLOCK_M, BLOCK_N // HEAD_DIM, 2, half).permute(0, 1, 3, 2))
                    acc = tl.join(x1 * c - x2 * s, x2 * c + x1 * s).permute(0, 1, 3, 2).reshape(BLOCK_M, BLOCK_N)
            if RESIDUAL:
                acc += r_desc.load([off_m, off_n]).to(tl.float32)
            c_desc.store([off_m, off_n], acc.to(c_desc.dtype))

    from triton.tools.tensor_descriptor import TensorDescriptor

    return SimpleNamespace(linear=linear_kernel, cdiv=triton.cdiv, descriptor=TensorDescriptor.from_tensor)


@functools.lru_cache(maxsize=None)
def _programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few programs, each walking several tiles
    return torch.cuda.get_device_properties(device).multi_processor_count


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gelu: bool = False, rotary=None,
           residual: torch.Tensor | None = None, out: torch.Tensor | None = None, tile: Tile | None = None):
    """``x @ w.T + b`` with the epilogues above; ``out`` may be ``residual`` (in place).
    ``rotary``: ``(cos, sin, cols, head_dim)``, cos/sin (rows, head_dim) FP32 per row of x.
    Falls back to :func:`linear_reference` where :func:`runs_fused` says no (or ``residual`` or
    ``out`` is not contiguous)."""
    tile = tile or (TILE if residual is None else RESIDUAL_TILE)
    plain = all(t is None or t.is_contiguous() for t in (residual, out))  # (TMA descriptors of rows)
    if not (plain and runs_fused(x, w, rotary, tile)):
        y = linear_reference(x, w, b, gelu, rotary, residual)
        return y if out is None else out.copy_(y)
    m, k_dim = x.shape
    n = w.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    kern = _kernel()
    desc = kern.descriptor
    a_d = desc(x, [tile.block_m, tile.block_k])
    w_d = desc(w, [tile.block_n, tile.block_k])
    c_d = desc(out, [tile.block_m, tile.block_n])
    r_d = desc(residual, [tile.block_m, tile.block_n]) if residual is not None else c_d
    cos, sin, cols, d = rotary if rotary is not None else (b, b, 0, 64)
    tiles = kern.cdiv(m, tile.block_m) * kern.cdiv(n, tile.block_n)
    programs = min(tiles, _programs(x.device)) if tile.persistent else tiles
    kern.linear[(programs,)](
        a_d, w_d, c_d, r_d, b, cos, sin, m, n, k_dim, cos.stride(0) if rotary is not None else 0,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        NUM_PROGRAMS=programs, STAGES=tile.stages, WARP_SPECIALIZE=tile.warp_specialize, GELU=gelu,
        RESIDUAL=residual is not None, ROTARY_COLS=cols, HEAD_DIM=d, num_warps=tile.warps)
    return out
