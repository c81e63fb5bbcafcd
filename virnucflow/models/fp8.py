"""FP8 (E4M3) matrix products for ``precision: fp8`` (opt-in; GPUs with FP8 tensor cores).

Hopper's FP8 tensor cores run matrix products at twice the FP16 rate. In this
mode every ``nn.Linear`` of a model becomes an :class:`Fp8Linear`:

- weights are quantised once, on load, from the FP16/FP32 checkpoint: one
  scale per output channel (``amax(|W[n, :]|) / 448``, 448 being E4M3's
  largest value);
- activations are quantised per token as they arrive (one scale per row),
  by one Triton kernel (each row's largest value first, then the activation
  evaluated once per value: the row's second read comes from L2; one write
  of E4M3 and its scale) that also applies the activation function before it
  where the model fuses one (ESM-2's erf GELU before ``fc2``);
- the product runs in ``torch._scaled_mm`` with both scales applied in its
  epilogue, plus the bias, written in 16 bits, with Hopper's fast accumulation on
  the fused path (``embedding.fused``; ``FAST_ACCUM``).

Everything else (embeddings, LayerNorm, rotary, attention, pooling) stays as
in FP16. FP8 keeps 3 mantissa bits: the relative error per product is around
1e-2, so ``fp32_compare`` on the user's data must pass before FP8 is used.
Where ``torch._scaled_mm`` cannot run (the CPU, or the tests' Triton
interpreter) the same quantisation is applied and the product is computed
from the dequantised values (:func:`scaled_mm_reference`): the arithmetic
FP8 stands for, without its speed.

A model says which activation precedes which linear with the class attribute
``fp8_fused_activations = (("act", "fc2"),)`` on the module holding both
(the activation module is then replaced by ``nn.Identity``).
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

log = logging.getLogger("virnucflow")

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite E4M3 value
MIN_SCALE = 1e-12  # rows of zeros quantise to zeros
ACTIVATIONS = {"gelu": F.gelu}
#: ``torch._scaled_mm(use_fast_accum=True)`` on the fused path (``Fp8Linear.fused``; ``fused: false``
#: accumulates as before): Hopper's FP8 products accumulated without the
#: periodic promotion to FP32. H100, 2026-12-07: the four ESM-2 3B products 1.24-1.31x faster, the
#: whole model 161,792 against 137,450 tokens/s; a product's largest error against FP32 of the same
#: E4M3 values 2.5e-3-5.4e-3 (3.5e-4 without), pooled vectors against FP32 unchanged at 4 digits
#: (mean abs diff 0.06122 vs 0.06113: the E4M3 rounding dominates). benchmarks/results/.
FAST_ACCUM = True


def supported(device: torch.device) -> str | None:
    """None if FP8 GEMMs run on ``device``, else why not."""
    if device.type != "cuda":
        return None  # the CPU runs the reference (slow, for tests)
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return (f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no FP8 tensor cores "
                "(Ada or Hopper, 8.9 or later, needed)")
    return None


# --------------------------------------------------------------------------- quantisation


class QuantizedRows(NamedTuple):
    """(M, K) E4M3 values and (M, 1) float32 scales: row ``i`` is ``q[i] * scale[i]``."""

    q: torch.Tensor
    scale: torch.Tensor


def add_layer_norm_quantized(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, QuantizedRows]:
    """``s = x + y`` and ``LayerNorm(s)`` in E4M3 rows (one scale per row) for an :class:`Fp8Linear` to
    read directly: one pass with the Triton kernel (:func:`kernels.add_layer_norm`), else the reference."""
    if not kernels.add_layer_norm_runs_fused(x, y):
        s, n = kernels.add_layer_norm_reference(x, y, weight, bias, eps)
        return s, QuantizedRows(*quantize_rows_reference(n.reshape(-1, n.shape[-1])))
    rows, e = x.shape
    out = QuantizedRows(torch.empty((rows, e), dtype=FP8, device=x.device),
                        torch.empty((rows, 1), dtype=torch.float32, device=x.device))
    s, _ = kernels.add_layer_norm(x, y, weight, bias, eps, quantized_out=out)
    return s, out


def quantize_rows_reference(x: torch.Tensor, activation: str | None = None):
    """(M, K) -> (M, K) E4M3 values and (M, 1) float32 scales, ``x ~= q * scale`` per row."""
    v = x.float()
    if activation:
        v = ACTIVATIONS[activation](v)
    scale = v.abs().amax(dim=-1, keepdim=True).clamp(min=MIN_SCALE) / FP8_MAX
    return (v / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


try:  # Triton comes with PyTorch on Linux; without it the reference runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

if triton is not None:

    @triton.jit
    def _gelu(v, FAST_ERF: tl.constexpr):
        z = v * 0.7071067811865476
        if FAST_ERF:
            # erf by Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, far below FP16's and
            # E4M3's resolution, at a fraction of libdevice's erf's cost
            a = tl.abs(z)
            t = 1.0 / (1.0 + 0.3275911 * a)
            poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
            e = 1.0 - poly * tl.exp(-a * a)
            erf = tl.where(z < 0, -e, e)
        else:
            erf = tl.math.erf(z)
        return 0.5 * v * (1.0 + erf)

    @triton.jit
    def _quant_rows_max_first(x, q, scale, stride_x, K: tl.constexpr, BLOCK: tl.constexpr, GELU: tl.constexpr,
                              FAST_ERF: tl.constexpr):
        # one program per row, BLOCK columns at a time, GELU evaluated once per value: pass 1
        # reads the row for its largest value only (GELU is increasing where it exceeds
        # |min GELU| = 0.17, so then amax |GELU| = GELU(max x); rows whose GELU(max x) < 0.17
        # take the exact amax in a second look); pass 2 reads the row again (from L2) and
        # writes GELU's E4M3 values
        row = tl.program_id(0)
        src = x + row.to(tl.int64) * stride_x
        dst = q + row.to(tl.int64) * K
        cols = tl.arange(0, BLOCK)
        top = tl.full([BLOCK], float("-inf"), tl.float32)
        for start in range(0, K, BLOCK):  # (a masked 0 can only send a row to the exact look)
            v = tl.load(src + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
            top = tl.maximum(top, v if GELU else tl.abs(v))
        amax = tl.max(top, axis=0)
        if GELU:
            amax = _gelu(amax, FAST_ERF)
            if amax < 0.17:  # the negative lobe may hold the largest |GELU|: look at every value
                top = tl.zeros([BLOCK], dtype=tl.float32)
                for start in range(0, K, BLOCK):
                    v = tl.load(src + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
                    top = tl.maximum(top, tl.abs(_gelu(v, FAST_ERF)))
                amax = tl.max(top, axis=0)
        amax = tl.maximum(amax, 1e-12)
        inv = 448.0 / amax  # one division per row: x * inv differs from x / s in the last bit at most
        for start in range(0, K, BLOCK):
            v = tl.load(src + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
            if GELU:
                v = _gelu(v, FAST_ERF)
            v = tl.minimum(tl.maximum(v * inv, -448.0), 448.0)
            tl.store(dst + start + cols, v.to(q.dtype.element_ty), mask=start + cols < K)
        tl.store(scale + row, amax / 448.0)

    @triton.jit
    def _quant_rows_looped(x, q, scale, stride_x, K: tl.constexpr, BLOCK: tl.constexpr, GELU: tl.constexpr,
                   FAST_ERF: tl.constexpr):
        # the previous kernel (fused: false): one program per row, BLOCK columns at a time: pass 1
        # finds the amax, pass 2 (reading the row again, from L2, GELU again) writes E4M3
        row = tl.program_id(0)
        src = x + row.to(tl.int64) * stride_x
        dst = q + row.to(tl.int64) * K
        cols = tl.arange(0, BLOCK)
        if K <= BLOCK:
            v = tl.load(src + cols, mask=cols < K, other=0.0).to(tl.float32)
            if GELU:
                v = _gelu(v, FAST_ERF)
            s = tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12) / 448.0
            v = tl.minimum(tl.maximum(v / s, -448.0), 448.0)
            tl.store(dst + cols, v.to(q.dtype.element_ty), mask=cols < K)
        else:
            amax = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, K, BLOCK):
                v = tl.load(src + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
                if GELU:
                    v = _gelu(v, FAST_ERF)
                amax = tl.maximum(amax, tl.abs(v))
            s = tl.maximum(tl.max(amax, axis=0), 1e-12) / 448.0
            for start in range(0, K, BLOCK):
                v = tl.load(src + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
                if GELU:
                    v = _gelu(v, FAST_ERF)
                v = tl.minimum(tl.maximum(v / s, -448.0), 448.0)
                tl.store(dst + start + cols, v.to(q.dtype.element_ty), mask=start + cols < K)
        tl.store(scale + row, s)


#: the row quantisation (measured on an H100, benchmarks/results/esm2_layer_profile_H100.md: F wide with
#: GELU 0.447 ms at block 2048 / 4 warps, against 0.693 for the whole row in one tile and 0.765 for the
#: previous two-pass kernel); fast erf: A&S 7.1.26
QUANT_BLOCK, QUANT_WARPS, FAST_ERF = 2048, 4, True
LOOPED_BLOCK, LOOPED_WARPS = 1024, 4  # the previous kernel's (fused: false)


def quantize_rows(x: torch.Tensor, activation: str | None = None, one_pass: bool = True):
    """Per-row E4M3 quantisation (Triton on CUDA, the reference elsewhere): the row's largest
    value first, then GELU once per value; ``one_pass=False`` runs the previous kernel, which
    evaluates the GELU twice (config ``embedding.fused: false``)."""
    if not kernels.use_triton(x) or x.stride(-1) != 1:
        return quantize_rows_reference(x, activation)
    if activation not in (None, "gelu"):
        raise ValueError(f"no fused activation {activation!r}")
    m, k = x.shape
    q = torch.empty((m, k), dtype=FP8, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    if m and not one_pass:
        _quant_rows_looped[(m,)](x, q, scale, x.stride(0), K=k, BLOCK=LOOPED_BLOCK, GELU=activation == "gelu",
                                 FAST_ERF=FAST_ERF, num_warps=LOOPED_WARPS)
    elif m:
        block = min(QUANT_BLOCK, k & -k if k & -k >= 256 else triton.next_power_of_2(k))  # no masked tail if it can
        _quant_rows_max_first[(m,)](x, q, scale, x.stride(0), K=k, BLOCK=block, GELU=activation == "gelu",
                                    FAST_ERF=FAST_ERF, num_warps=QUANT_WARPS)
    return q, scale


# --------------------------------------------------------------------------- products


def scaled_mm_reference(q, scale_q, w, scale_w, bias, out_dtype):
    """What ``torch._scaled_mm`` computes, from the dequantised values in FP32."""
    y = (q.float() * scale_q) @ (w.float() * scale_w.t()).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


@functools.lru_cache(maxsize=None)
def _out_dtype(device: torch.device, wanted: torch.dtype) -> torch.dtype:
    """The 16-bit type row-wise scaled products can be written in on this PyTorch and GPU:
    ``wanted`` (the model's dtype) where supported, else bfloat16 (logged once)."""
    a = torch.ones((16, 16), device=device).to(FP8)
    sa = torch.ones((16, 1), device=device)
    try:
        torch._scaled_mm(a, a.t(), scale_a=sa, scale_b=sa.t(), bias=torch.zeros(16, device=device, dtype=wanted),
                         out_dtype=wanted)
        return wanted
    except RuntimeError as err:
        log.info("fp8: row-wise scaled products write bfloat16 here (%s): GEMM outputs are bf16, the residual "
                 "stream stays %s", str(err).splitlines()[0], wanted)
        return torch.bfloat16


class Fp8Linear(nn.Module):
    """``nn.Linear`` with E4M3 weights (per output channel) and activations (per row)."""

    def __init__(self, linear: nn.Linear, activation: str | None = None):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=MIN_SCALE) / FP8_MAX  # (N, 1)
        self.register_buffer("weight", (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8))  # (N, K)
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, N)
        self.dtype = linear.weight.dtype  # the model's activation dtype
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.activation = activation
        self.fused = True  # one-pass quantisation and fast accumulation (False: the previous kernels)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3{act}"

    def forward(self, x: torch.Tensor | QuantizedRows) -> torch.Tensor:
        if isinstance(x, QuantizedRows):
            (q, scale), shape = x, x.q.shape[:-1]
        else:
            shape = x.shape[:-1]
            q, scale = quantize_rows(x.reshape(-1, x.shape[-1]), self.activation, self.fused)
        if q.is_cuda and kernels.use_triton(q):
            out_dtype = _out_dtype(q.device, self.dtype)
            bias = self.bias.to(out_dtype) if self.bias is not None else None
            y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=bias,
                                 out_dtype=out_dtype, use_fast_accum=FAST_ACCUM and self.fused)
        else:
            y = scaled_mm_reference(q, scale, self.weight, self.weight_scale, self.bias, self.dtype)
        return y.reshape(*shape, self.out_features)


def quantize_model(model: nn.Module, fused: bool = True) -> int:
    """Replace the model's ``nn.Linear`` modules (in place) by :class:`Fp8Linear`; returns how many.
    ``fused`` (``embedding.fused``): the one-pass row quantisation and fast accumulation (False: the
    previous two-pass kernel and FP32 accumulation).

    Linears whose sizes are not multiples of 16 (FP8 GEMMs need them) stay as they are.
    """
    activations = {}  # (module, linear) -> the activation module before that linear
    for module in model.modules():
        for act_name, linear_name in getattr(module, "fp8_fused_activations", ()):
            activations[(id(module), linear_name)] = act_name
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear) or child.in_features % 16 or child.out_features % 16:
                continue
            act_name = activations.get((id(module), name))
            activation = None
            if act_name is not None:
                act = getattr(module, act_name)
                if not isinstance(act, nn.GELU) or act.approximate != "none":
                    raise ValueError(f"fp8: {type(module).__name__}.{act_name} is {act!r}, only erf GELU fuses")
                activation = "gelu"
                setattr(module, act_name, nn.Identity())
            setattr(module, name, Fp8Linear(child, activation))
            getattr(module, name).fused = fused
            n += 1
    return n
