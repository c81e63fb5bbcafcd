"""ESM-2 3B's layer at 32,768 packed tokens, piece by piece: ways of calling cuBLAS(Lt) and the Triton kernels' tiles.

- FP16 GEMMs, per shape: ``F.linear`` (cuBLASLt bias epilogue), the residual
  added by the GEMM in place (``addmm_``, beta 1: what the fused layer runs for
  out_proj and fc2), fc1 with the GELU epilogue; under PyTorch's cuBLAS and
  cuBLASLt back-ends.
- FP8 ``torch._scaled_mm``, per shape, with and without ``use_fast_accum``,
  and the relative error of each against the FP32 product of the same E4M3
  values.
- the rotary pass's tiles, add+LayerNorm with a row per row or one row for all,
  the attention kernel's block sizes on a batch of 500 bp windows' proteins;
- one whole layer: unfused, fused with the residual adds as passes, fused
  with them folded into the GEMMs.

Median of ``--reps`` CUDA-event timings; prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_util import cuda_median_ms as timed  # noqa: E402
from virnucflow.models import attention_kernel, fp8, kernels  # noqa: E402
from virnucflow.models.attention import PackedAttention  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config, tokenize  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402
from virnucflow.models.precision import Precision  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from workloads.frames import virnucpro_frames  # noqa: E402


def frames_batch(budget: int, pad_to: int | None = None):
    """A packed batch on the GPU of 500 bp windows' proteins (seed 1), as many as ``budget`` tokens hold."""
    _, aas = virnucpro_frames(400, seed=1)
    tokens, total = [], 0
    for a in aas:
        tok = tokenize(a)
        if total + len(tok) > budget:
            break
        tokens.append(tok)
        total += len(tok)
    return make_packed(tokens, torch.arange(len(tokens)).numpy(), pad_to=pad_to).to(torch.device("cuda"))


def table(title: str, header: str) -> None:
    print(f"\n### {title}\n\n{header}\n|{'---|' * header.count('|', 1)}", flush=True)


def gemms(t: int, reps: int) -> None:
    e = 2560
    shapes = {"qkv": (e, 3 * e), "out_proj": (e, e), "fc1": (e, 4 * e), "fc2": (4 * e, e)}
    g = torch.Generator(device="cuda").manual_seed(0)
    table(f"FP16 GEMMs, {t} tokens", "| shape | call | back-end | ms | TFLOP/s |")
    for name, (k, n) in shapes.items():
        x = torch.randn(t, k, device="cuda", dtype=torch.float16, generator=g)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g) * k ** -0.5
        b = torch.randn(n, device="cuda", dtype=torch.float16, generator=g)
        r = torch.randn(t, n, device="cuda", dtype=torch.float16, generator=g)
        calls = {"F.linear (bias epilogue)": lambda: F.linear(x, w, b)}
        if name in ("out_proj", "fc2"):
            calls["residual.addmm_ (beta 1, in place)"] = lambda: r.addmm_(x, w.t())
        if name == "fc1":
            calls["_addmm_activation GELU epilogue"] = lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True)
        for lib in ("cublas", "cublaslt"):
            torch.backends.cuda.preferred_blas_library(lib)
            for call, fn in calls.items():
                ms = timed(fn, reps)
                print(f"| {name} | {call} | {lib} | {ms:.3f} | {2 * t * k * n / ms / 1e9:.0f} |", flush=True)
        torch.backends.cuda.preferred_blas_library("cublas")
    if fp8.supported(torch.device("cuda")) is not None:
        return
    table(f"FP8 scaled_mm, {t} tokens", "| shape | use_fast_accum | ms | TFLOP/s | max rel. error vs FP32 of the E4M3 values |")
    for name, (k, n) in shapes.items():
        x = torch.randn(t, k, device="cuda", dtype=torch.float16, generator=g)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g) * k ** -0.5
        b = torch.randn(n, device="cuda", dtype=torch.float16, generator=g)
        lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        f8 = fp8.Fp8Linear(lin)
        q, s = fp8.quantize_rows(x)
        exact = fp8.scaled_mm_reference(q[:4096], s[:4096], f8.weight, f8.weight_scale, f8.bias, torch.float32)
        for fast in (False, True):
            fn = (lambda fast=fast: torch._scaled_mm(q, f8.weight.t(), scale_a=s, scale_b=f8.weight_scale,
                                                     bias=b, out_dtype=torch.float16, use_fast_accum=fast))
            err = ((fn()[:4096].float() - exact).abs().max() / exact.abs().max()).item()
            ms = timed(fn, reps)
            print(f"| {name} | {fast} | {ms:.3f} | {2 * t * k * n / ms / 1e9:.0f} | {err:.2e} |", flush=True)


def passes(batch, model: ESM2, reps: int) -> None:
    layer = model.layers[0]
    attn = layer.self_attn
    t = batch.tokens.shape[0]
    rotary = model._rotary_tables(batch.positions)[0]
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(t, 2560, device="cuda", dtype=torch.float16, generator=g)
    y = torch.randn(t, 2560, device="cuda", dtype=torch.float16, generator=g)
    qkv = attn.qkv(x)
    ln = layer.final_layer_norm
    table("rotary in place (q, k of 40 heads), tiles", "| tokens | heads | warps | ms | TB/s |")
    chosen = kernels.ROTARY_BLOCK_T, kernels.ROTARY_HEADS, kernels.ROTARY_WARPS
    for cfg in ((64, 1, 4), (16, 16, 4), (16, 16, 8), (32, 16, 8), (8, 16, 4), (16, 8, 4), (32, 8, 4), (8, 32, 8)):
        kernels.ROTARY_BLOCK_T, kernels.ROTARY_HEADS, kernels.ROTARY_WARPS = cfg
        ms = timed(lambda: kernels.rotary_qk_inplace(qkv, rotary.cos, rotary.sin, attn.num_heads), reps)
        print(f"| {cfg[0]} | {cfg[1]} | {cfg[2]} | {ms:.3f} | {t * 2560 * 2 * 2 * 2 / ms / 1e9:.2f} |", flush=True)
    kernels.ROTARY_BLOCK_T, kernels.ROTARY_HEADS, kernels.ROTARY_WARPS = chosen
    table("add + LayerNorm", "| call | ms |")
    shift = torch.randn(2560, device="cuda", generator=g)
    for call, fn in (("residual + y, sum written", lambda: kernels.add_layer_norm(x, y, ln.weight, ln.bias, 1e-5)),
                     ("residual + one row, sum not written",
                      lambda: kernels.add_layer_norm(x, shift, ln.weight, ln.bias, 1e-5, write_sum=False))):
        print(f"| {call} | {timed(fn, reps):.3f} |", flush=True)
    table("attention (triton), blocks", "| BLOCK_M | BLOCK_N | warps | ms |")
    q, k, v = kernels.rotary_qk_inplace(qkv, rotary.cos, rotary.sin, attn.num_heads)
    attend = PackedAttention("triton", batch, 40)
    chosen = attention_kernel.ATTENTION_BLOCK_M, attention_kernel.ATTENTION_BLOCK_N, attention_kernel.ATTENTION_WARPS
    for cfg in ((64, 64, 4), (128, 64, 4), (128, 64, 8), (64, 32, 4), (128, 32, 4), (64, 128, 4), (128, 128, 8),
                (32, 64, 4)):
        attention_kernel.ATTENTION_BLOCK_M, attention_kernel.ATTENTION_BLOCK_N, attention_kernel.ATTENTION_WARPS = cfg
        try:
            ms = timed(lambda: attend(q, k, v, 1.0), reps)
            print(f"| {cfg[0]} | {cfg[1]} | {cfg[2]} | {ms:.3f} |", flush=True)
        except Exception as err:  # a tile that does not fit
            print(f"| {cfg[0]} | {cfg[1]} | {cfg[2]} | {type(err).__name__} |", flush=True)
    attention_kernel.ATTENTION_BLOCK_M, attention_kernel.ATTENTION_BLOCK_N, attention_kernel.ATTENTION_WARPS = chosen
    table("whole layer", "| path | ms | tokens/s for 36 layers |")
    hidden = x * 0.1
    paths = {"unfused": lambda: layer(hidden, y, rotary, attend, True, False),
             "fused, residual adds as passes": lambda: layer(hidden, y, rotary, attend, True, True),
             "fused, residual adds in the GEMMs": lambda: layer.forward_folded(y.clone(), shift, rotary, attend)}
    for name, fn in paths.items():
        ms = timed(fn, reps)
        print(f"| {name} | {ms:.3f} | {batch.num_tokens / (36 * ms / 1e3):,.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    with torch.inference_mode():
        gemms(args.tokens, args.reps)
        batch = frames_batch(args.tokens)
        with torch.device("cuda"):
            model = ESM2(ESM2Config(1, 2560, 40))
        init_random(model, 0)
        model.prepare(torch.device("cuda"), Precision("fp16", "fp16"), fused=True)
        passes(batch, model, args.reps)


if __name__ == "__main__":
    main()
