"""Where an ESM-2 3B layer's time goes: each step of one packed layer timed alone, FP16 and FP8.

The unfused layer (``fused: false``, the previous default) and the fused one
(rotary inside the attention kernel, fc1's GELU in cuBLASLt's epilogue, FP8's
one-pass GELU + quantisation), one after the other in the same process.
One full-size layer (random weights) on a packed batch of 500 bp windows'
proteins (~168 tokens each) filling the production token budget (32,768).
Each step runs ``--reps`` times between CUDA events (median kept); the
steps' sum is set beside the whole layer timed the same way and the tokens/s
36 such layers would give. GEMM rows show TFLOP/s against the GPU's limit.

Writes ``<out>/esm2_layer_profile_<gpu>.md``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_util import cuda_median_ms as timed  # noqa: E402
from benchmarks.esm2_gemm_probe import frames_batch  # noqa: E402
from virnucflow.models import fp8, kernels  # noqa: E402
from virnucflow.models.attention import PackedAttention, resolve_backend  # noqa: E402
from virnucflow.models import esm2  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config  # noqa: E402
from virnucflow.models.precision import Precision  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402

BUDGET, LAYERS = 32768, 36


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    batch = frames_batch(BUDGET, pad_to=BUDGET)
    cfg = ESM2Config(1, 2560, 40)
    with torch.device(dev):
        model = ESM2(cfg)
    init_random(model, 0)
    model.prepare(dev, Precision("fp16", "fp16"), fused=True)
    layer16 = model.layers[0]
    backend = resolve_backend("auto", dev, torch.float16, alibi=False, packed=True)
    attend = PackedAttention(backend, batch, cfg.attention_heads)
    rotary = model._rotary_tables(batch.positions)[0]
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(BUDGET, cfg.embed_dim, device=dev, generator=g, dtype=torch.float16)
    residual = torch.randn(BUDGET, cfg.embed_dim, device=dev, generator=g, dtype=torch.float16)
    t, e, f = BUDGET, cfg.embed_dim, cfg.ffn_dim
    gemm_flop = {"qkv": 2 * t * e * 3 * e, "out_proj": 2 * t * e * e, "fc1": 2 * t * e * f, "fc2": 2 * t * f * e}
    rows = []

    def profile(name: str, layer, fused: bool) -> None:
        """The steps of the unfused layer (the previous default) or of the fused one."""
        attn, ln1 = layer.self_attn, layer.self_attn_layer_norm
        is8 = isinstance(layer.fc1, fp8.Fp8Linear)
        name = f"{name} {'fused' if fused else 'unfused'}"
        _, h = kernels.add_layer_norm(residual, hidden, ln1.weight, ln1.bias, ln1.eps)
        qkv = attn.qkv(h)
        q, k, v = kernels.rotary_qk_inplace(qkv.clone(), rotary.cos, rotary.sin, attn.num_heads)
        q0, k0, v0 = attn.project(h)  # not rotated: the fused attention rotates them
        o = attend(q, k, v, 1.0).flatten(-2)
        h1 = layer.fc1(h)
        act = layer.act(h1)
        steps = [("add + LayerNorm (x2)" + (", writing E4M3 rows" if is8 else ""),
                  lambda: layer.add_norm(residual, hidden, ln1, is8), 2, None)]
        one_pass = "max first, GELU once" if fused else "previous, GELU twice"
        if is8:
            steps.append((f"quantise rows, E wide (out_proj input), {one_pass}", lambda: fp8.quantize_rows(o, None, fused), 1,
                          None))
            for lin, x, key in ((attn.qkv, h, "qkv"), (attn.out_proj, o, "out_proj"), (layer.fc1, h, "fc1"), (layer.fc2, h1, "fc2")):
                qx, sx = fp8.quantize_rows(x)
                out_dtype = fp8._out_dtype(dev, torch.float16)
                bias = lin.bias.to(out_dtype)
                steps.append((f"{key} GEMM (FP8 scaled_mm)", lambda lin=lin, qx=qx, sx=sx, bias=bias, od=out_dtype:
                              torch._scaled_mm(qx, lin.weight.t(), scale_a=sx, scale_b=lin.weight_scale, bias=bias,
                                               out_dtype=od), 1, gemm_flop[key]))
            steps.append((f"GELU + quantise rows, F wide (fc2 input), {one_pass}", lambda: fp8.quantize_rows(h1, "gelu", fused),
                          1, "quant"))
        else:
            for lin, x, key in ((attn.qkv, h, "qkv"), (attn.out_proj, o, "out_proj"), (layer.fc2, act, "fc2")):
                steps.append((f"{key} GEMM (FP16 cuBLAS)", lambda lin=lin, x=x: lin(x), 1, gemm_flop[key]))
            if fused:
                steps.append(("fc1 GEMM + GELU epilogue (cuBLASLt, tanh GELU)", lambda: layer.fc1_gelu(h, True), 1,
                              gemm_flop["fc1"]))
            else:
                steps.append(("fc1 GEMM (FP16 cuBLAS)", lambda: layer.fc1(h), 1, gemm_flop["fc1"]))
                steps.append(("GELU (PyTorch, erf)", lambda: F.gelu(h1), 1, None))
        if fused and esm2.ROTARY_IN_ATTENTION and attend.rotates_inside(attn.head_dim):
            steps.append((f"attention ({backend}) + rotary of q, k inside",
                          lambda: attend(q0, k0, v0, 1.0, rotary=rotary.by_position(attend.max_seqlen)), 1, None))
        else:
            steps.append(("rotary in place (q, k)", lambda: kernels.rotary_qk_inplace(qkv, rotary.cos, rotary.sin, attn.num_heads), 1, None))
            steps.append((f"attention ({backend})", lambda: attend(q, k, v, 1.0), 1, None))
        total = 0.0
        for step, fn, times, flop in steps:
            ms = timed(fn, args.reps) * times
            total += ms
            if flop == "quant":  # one read of the FP16 input, one write of E4M3 and the scales
                tf = f"{(t * f * 3 + t * 4) / (ms / 1e3) / 1e12:.2f} TB/s"
            else:
                tf = f"{flop / (ms / times) / 1e9:.0f}" if flop else ""
            rows.append((name, step, ms, tf))
            print(f"| {name} | {step} | {ms:.3f} | {tf} |", flush=True)
        whole = timed(lambda: layer(hidden, residual, rotary, attend, True, fused), args.reps)
        rows.append((name, "sum of the steps", total, ""))
        rows.append((name, "whole layer", whole, ""))
        print(f"| {name} | whole layer | {whole:.3f} | |", flush=True)
        rows.append((name, f"-> tokens/s for {LAYERS} layers (layers only)", BUDGET / (LAYERS * whole / 1e3), ""))

    add_ln = []
    for warps in (4, 8, 16):
        kernels.ADD_LN_WARPS = warps
        add_ln.append((warps, timed(lambda: kernels.add_layer_norm(residual, hidden, model.layers[0].final_layer_norm.weight,
                                                                   model.layers[0].final_layer_norm.bias, 1e-5), args.reps)))
    kernels.ADD_LN_WARPS = 4
    quant = []
    if fp8.supported(dev) is None:
        # the row quantisation's variants on the layer's two shapes (one read, one write: the floor)
        x_e = torch.randn(BUDGET, cfg.embed_dim, device=dev, dtype=torch.float16)
        x_f = torch.randn(BUDGET, cfg.ffn_dim, device=dev, dtype=torch.float16) * 2
        chosen = fp8.QUANT_BLOCK, fp8.QUANT_WARPS
        for kernel, block, warps in (("looped", 1024, 4), ("max_first", 1024, 4), ("max_first", 2048, 4),
                                     ("max_first", 2048, 8), ("max_first", 1024, 8), ("max_first", 512, 4)):
            fp8.QUANT_BLOCK, fp8.QUANT_WARPS = block, warps
            one = kernel != "looped"
            quant.append((kernel, block, warps, timed(lambda: fp8.quantize_rows(x_e, None, one), args.reps),
                          timed(lambda: fp8.quantize_rows(x_f, "gelu", one), args.reps)))
        fp8.QUANT_BLOCK, fp8.QUANT_WARPS = chosen
        del x_e, x_f
    with torch.inference_mode():
        for fused in (False, True):
            profile("fp16", layer16, fused)
        if fp8.supported(dev) is None:
            layer8 = copy.deepcopy(layer16)
            fp8.quantize_model(layer8)
            for fused in (False, True):
                try:
                    profile("fp8", layer8, fused)
                except Exception as err:  # keep what was measured
                    print(f"fp8 {fused}: {type(err).__name__}: {err}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# ESM-2 3B, one layer at {BUDGET:,} packed tokens ({len(batch.cu_seqlens) - 1} proteins of 500 bp windows), {gpu}", "",
             f"torch {torch.__version__}; median of {args.reps} runs per step (CUDA events)", "",
             "| path | step | ms | TFLOP/s |", "|---|---|---|---|"]
    for name, step, ms, tf in rows:
        lines.append(f"| {name} | {step} | {ms:,.3f} | {tf} |" if "tokens/s" not in step else f"| {name} | {step} | {ms:,.0f} | |")
    lines += ["", "add + LayerNorm (one call, FP16, E wide) by warps per row: " +
              ", ".join(f"{w} warps {ms:.3f} ms ({BUDGET * cfg.embed_dim * 2 * 4 / ms / 1e9:.2f} TB/s)" for w, ms in add_ln)]
    if quant:
        floor = BUDGET * cfg.ffn_dim * 3 / 4.8e12 * 1e3
        lines += ["", f"Row quantisation variants (fp8.quantize_rows), ms; used: max_first, block {fp8.QUANT_BLOCK}, "
                  f"{fp8.QUANT_WARPS} warps; F wide floor at 4.8 TB/s: {floor:.3f} ms", "",
                  "| kernel | block | warps | E wide | F wide + GELU | F wide TB/s |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {b} | {w} | {e_ms:.3f} | {f_ms:.3f} | {BUDGET * cfg.ffn_dim * 3 / f_ms / 1e9:.2f} |"
                  for k, b, w, e_ms, f_ms in quant]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / f"esm2_layer_profile_{gpu.split()[1] if len(gpu.split()) > 1 else gpu}.md").write_text(text)


if __name__ == "__main__":
    main()
