"""Where an ESM-2 3B layer's time goes: each step of one packed layer timed alone, FP16 and FP8.

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
from workloads.frames import virnucpro_frames  # noqa: E402
from virnucflow.models import fp8, kernels  # noqa: E402
from virnucflow.models.attention import PackedAttention, resolve_backend  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config, tokenize  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402

BUDGET, LAYERS = 32768, 36


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tune", action="store_true", help="also time the row quantisation's block/warp choices")
    args = p.parse_args()
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    _, aas = virnucpro_frames(400, seed=1)
    tokens, total = [], 0
    for a in aas:
        t = tokenize(a)
        if total + len(t) > BUDGET:
            break
        tokens.append(t)
        total += len(t)
    batch = make_packed(tokens, torch.arange(len(tokens)).numpy(), pad_to=BUDGET).to(dev)
    cfg = ESM2Config(1, 2560, 40)
    with torch.device(dev):
        model = ESM2(cfg)
    init_random(model, 0)
    model.prepare(dev, torch.float16)
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

    def profile(name: str, layer) -> None:
        attn, ln1, ln2 = layer.self_attn, layer.self_attn_layer_norm, layer.final_layer_norm
        is8 = isinstance(layer.fc1, fp8.Fp8Linear)
        _, h = kernels.add_layer_norm(residual, hidden, ln1.weight, ln1.bias, ln1.eps)
        qkv = attn.qkv(h)
        q, k, v = kernels.rotary_qk_inplace(qkv.clone(), rotary.cos, rotary.sin, attn.num_heads)
        o = attend(q, k, v, 1.0).flatten(-2)
        h1 = layer.fc1(h)
        act = layer.act(h1)
        steps = [("add + LayerNorm (x2)" + (", writing E4M3 rows" if is8 else ""),
                  lambda: kernels.add_layer_norm(residual, hidden, ln1.weight, ln1.bias, ln1.eps, quantize=is8), 2, None)]
        if is8:
            steps.append(("quantise rows, E wide (out_proj input)", lambda: fp8.quantize_rows(o), 1, None))
            for lin, x, key in ((attn.qkv, h, "qkv"), (attn.out_proj, o, "out_proj"), (layer.fc1, h, "fc1"), (layer.fc2, h1, "fc2")):
                qx, sx = fp8.quantize_rows(x)
                out_dtype = fp8._out_dtype(dev, torch.float16)
                bias = lin.bias.to(out_dtype)
                steps.append((f"{key} GEMM (FP8 scaled_mm)", lambda lin=lin, qx=qx, sx=sx, bias=bias, od=out_dtype:
                              torch._scaled_mm(qx, lin.weight.t(), scale_a=sx, scale_b=lin.weight_scale, bias=bias,
                                               out_dtype=od), 1, gemm_flop[key]))
            steps.append(("GELU + quantise rows, F wide (fc2 input)", lambda: fp8.quantize_rows(h1, "gelu"), 1, None))
        else:
            for lin, x, key in ((attn.qkv, h, "qkv"), (attn.out_proj, o, "out_proj"), (layer.fc1, h, "fc1"), (layer.fc2, act, "fc2")):
                steps.append((f"{key} GEMM (FP16 cuBLAS)", lambda lin=lin, x=x: lin(x), 1, gemm_flop[key]))
            steps.append(("GELU (PyTorch, erf)", lambda: F.gelu(h1), 1, None))
        steps.append(("rotary in place (q, k)", lambda: kernels.rotary_qk_inplace(qkv, rotary.cos, rotary.sin, attn.num_heads), 1, None))
        steps.append((f"attention ({backend})", lambda: attend(q, k, v, 1.0), 1, None))
        total = 0.0
        for step, fn, times, flop in steps:
            ms = timed(fn, args.reps) * times
            total += ms
            tf = f"{flop / (ms / times) / 1e9:.0f}" if flop else ""
            rows.append((name, step, ms, tf))
        whole = timed(lambda: layer(hidden, residual, rotary, attend, True), args.reps)
        rows.append((name, "sum of the steps", total, ""))
        rows.append((name, "whole layer", whole, ""))
        rows.append((name, f"-> tokens/s for {LAYERS} layers (layers only)", BUDGET / (LAYERS * whole / 1e3), ""))

    tuning = []
    if fp8.supported(dev) is None and args.tune:
        # the row quantisation's block and warps, on the layer's two shapes
        x_e = torch.randn(BUDGET, cfg.embed_dim, device=dev, dtype=torch.float16)
        x_f = torch.randn(BUDGET, cfg.ffn_dim, device=dev, dtype=torch.float16)
        chosen = fp8.QUANT_BLOCK, fp8.QUANT_WARPS, fp8.FAST_ERF
        for block, warps, fast in ((512, 4, True), (1024, 4, False), (1024, 4, True), (1024, 8, True),
                                   (2048, 4, True), (2048, 8, True), (16384, 16, True), (16384, 32, True)):
            fp8.QUANT_BLOCK, fp8.QUANT_WARPS, fp8.FAST_ERF = block, warps, fast
            tuning.append((block, warps, "A&S 7.1.26" if fast else "libdevice", timed(lambda: fp8.quantize_rows(x_e), args.reps),
                           timed(lambda: fp8.quantize_rows(x_f, "gelu"), args.reps)))
        fp8.QUANT_BLOCK, fp8.QUANT_WARPS, fp8.FAST_ERF = chosen
    with torch.inference_mode():
        profile("fp16", layer16)
        if fp8.supported(dev) is None:
            layer8 = copy.deepcopy(layer16)
            fp8.quantize_model(layer8)
            profile("fp8", layer8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# ESM-2 3B, one layer at {BUDGET:,} packed tokens ({len(tokens)} proteins of 500 bp windows), {gpu}", "",
             f"torch {torch.__version__}; median of {args.reps} runs per step (CUDA events)", "",
             "| precision | step | ms | TFLOP/s |", "|---|---|---|---|"]
    for name, step, ms, tf in rows:
        lines.append(f"| {name} | {step} | {ms:,.3f} | {tf} |" if "tokens/s" not in step else f"| {name} | {step} | {ms:,.0f} | |")
    if tuning:
        lines += ["", f"Row quantisation (fp8.quantize_rows), ms; used: block {fp8.QUANT_BLOCK}, {fp8.QUANT_WARPS} warps, "
                  f"fast erf {fp8.FAST_ERF}", "", "| block | warps | erf | E wide | F wide + GELU |", "|---|---|---|---|---|"]
        lines += [f"| {b} | {w} | {erf} | {e_ms:.3f} | {f_ms:.3f} |" for b, w, erf, e_ms, f_ms in tuning]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / f"esm2_layer_profile_{gpu.split()[1] if len(gpu.split()) > 1 else gpu}.md").write_text(text)


if __name__ == "__main__":
    main()
