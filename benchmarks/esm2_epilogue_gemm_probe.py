"""ESM-2 3B's four products at 32,768 tokens: the Triton GEMMs with their epilogues (``virnucflow.models.gemm``)
against what the fused path runs today (cuBLAS and the passes around it), tile by tile.

Per product, what it replaces:

- qkv: ``F.linear`` + the rotary pass, against the GEMM with the rotary epilogue;
- out_proj and fc2: ``F.linear`` + add+LayerNorm (sum written), against the GEMM
  adding the residual in place + the LayerNorm alone;
- fc1: cuBLASLt's GELU epilogue (tanh), against the GEMM with the erf GELU.

Each Triton row gives the time, its TFLOP/s (the product's FLOPs over the whole
time), and the largest difference from the FP32 reference of the same epilogue
(:func:`~virnucflow.models.gemm.linear_reference`, first 4,096 rows). Then one
ESM-2 3B layer (random weights) on a packed batch of 500 bp windows' proteins:
the shipped fused layer, the same without the qkv GEMM's rotary epilogue, and
every epilogue in the Triton GEMMs with the best tiles (:func:`all_epilogues`).
Prints markdown. Median of ``--reps``
CUDA-event timings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.esm2_gemm_probe import frames_batch, table  # noqa: E402
from benchmarks.gpu_util import cuda_median_ms as timed  # noqa: E402
from virnucflow.models import esm2, gemm, kernels  # noqa: E402
from virnucflow.models.attention import PackedAttention  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config  # noqa: E402
from virnucflow.models.precision import Precision  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402

T = gemm.Tile
CANDIDATES = [
    T(128, 256, 64, 3, 8), T(128, 128, 64, 4, 8), T(128, 128, 64, 4, 4), T(256, 128, 64, 3, 8),
    T(128, 256, 64, 3, 8, persistent=False), T(128, 128, 64, 4, 4, persistent=False),
    T(128, 256, 64, 3, 8, warp_specialize=True), T(128, 128, 64, 4, 4, warp_specialize=True),
]


def products(t: int, reps: int, rotary) -> dict:
    e, d = 2560, 64
    shapes = {"qkv": (e, 3 * e), "out_proj": (e, e), "fc1": (e, 4 * e), "fc2": (4 * e, e)}
    g = torch.Generator(device="cuda").manual_seed(0)
    ln_w = torch.ones(e, device="cuda", dtype=torch.float16)
    ln_b = torch.zeros(e, device="cuda", dtype=torch.float16)
    best = {}
    table(f"products at {t} tokens", "| product | path | tile (m n k stages warps persistent ws) | ms | TFLOP/s | "
          "max abs diff vs FP32 |")
    for name, (k, n) in shapes.items():
        x = torch.randn(t, k, device="cuda", dtype=torch.float16, generator=g)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g) * k ** -0.5
        b = torch.randn(n, device="cuda", dtype=torch.float16, generator=g) * 0.1
        r = torch.randn(t, n, device="cuda", dtype=torch.float16, generator=g)
        flops = 2 * t * k * n
        epi = {"qkv": dict(rotary=(rotary.cos, rotary.sin, 2 * e, d)), "fc1": dict(gelu=True)}.get(name, {})
        if name == "qkv":
            shipped = lambda: kernels.rotary_qk_inplace(F.linear(x, w, b), rotary.cos, rotary.sin, 40)  # noqa: E731
            label = "F.linear + rotary pass"
        elif name == "fc1":
            shipped = lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True)  # noqa: E731
            label = "cuBLASLt GELU (tanh) epilogue"
        else:
            shipped = lambda: kernels.add_layer_norm(r, F.linear(x, w, b), ln_w, ln_b, 1e-5)  # noqa: E731
            label = "F.linear + add+LayerNorm"
        ms = timed(shipped, reps)
        print(f"| {name} | {label} | cuBLAS | {ms:.3f} | {flops / ms / 1e9:.0f} | |", flush=True)
        best[name] = (ms, None)
        if name in ("out_proj", "fc2"):
            epi = dict(residual=r)
        ref = gemm.linear_reference(x[:4096], w, b, **{**epi, **(
            {"residual": r[:4096]} if "residual" in epi else {}), **(
            {"rotary": (rotary.cos[:4096], rotary.sin[:4096], 2 * e, d)} if "rotary" in epi else {})}).float()
        for tile in CANDIDATES + [None]:
            plain = tile is None  # the best tile without its epilogue: the GEMM's own rate
            tile = tile or best[name][1] or CANDIDATES[0]
            kw = {} if plain else epi
            if "residual" in kw:
                out = r.clone()
                fn = lambda: kernels.add_layer_norm(  # noqa: E731
                    gemm.linear(x, w, b, residual=out, out=out, tile=tile), None, ln_w, ln_b, 1e-5, write_sum=False)
            else:
                fn = lambda: gemm.linear(x, w, b, tile=tile, **kw)  # noqa: E731
            desc = f"{tile.block_m} {tile.block_n} {tile.block_k} {tile.stages} {tile.warps} {tile.persistent} " \
                   f"{tile.warp_specialize}"
            try:
                if "residual" in kw:
                    out = r.clone()
                    y = gemm.linear(x[:4096], w, b, residual=out[:4096], out=out[:4096], tile=tile)
                else:
                    y = gemm.linear(x, w, b, tile=tile, **kw)[:4096]
                err = (y.float() - ref).abs().max().item() if not plain else float("nan")
                ms_t = timed(fn, reps)
            except Exception as exc:  # a tile that does not compile or fit
                print(f"| {name} | triton{'' if plain else ' + epilogue'} | {desc} | {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:80] if str(exc) else ''} | | |", flush=True)
                continue
            what = "triton, no epilogue (bias only)" if plain else (
                "triton + epilogue + LayerNorm" if "residual" in kw else "triton + epilogue")
            print(f"| {name} | {what} | {desc} | {ms_t:.3f} | {flops / ms_t / 1e9:.0f} | "
                  f"{'' if plain else f'{err:.3g}'} |", flush=True)
            if not plain and (best[name][1] is None or ms_t < best[name][2]):
                best[name] = (best[name][0], tile, ms_t)
    return best


def all_epilogues(layer, x, rotary, attend, tiles) -> None:
    """One layer with every epilogue in the Triton GEMMs (``x``, the residual stream, updated in
    place): the LayerNorms alone, q/k rotated by qkv's GEMM, the erf GELU by fc1's, the residual adds
    by out_proj's and fc2's. What the shipped layer would be if each product won."""
    attn, (t, e) = layer.self_attn, x.shape
    ln1, ln2 = layer.self_attn_layer_norm, layer.final_layer_norm
    h = kernels.add_layer_norm(x, None, ln1.weight, ln1.bias, ln1.eps, write_sum=False)[1]
    qkv = gemm.linear(h, attn.qkv.weight, attn.qkv.bias, rotary=(rotary.cos, rotary.sin, 2 * e, attn.head_dim),
                      tile=tiles["qkv"])
    q, k, v = qkv.view(t, 3, attn.num_heads, attn.head_dim).unbind(1)
    o = attend(q, k, v, 1.0)
    gemm.linear(o.flatten(-2), attn.out_proj.weight, attn.out_proj.bias, residual=x, out=x, tile=tiles["out_proj"])
    h = kernels.add_layer_norm(x, None, ln2.weight, ln2.bias, ln2.eps, write_sum=False)[1]
    a = gemm.linear(h, layer.fc1.weight, layer.fc1.bias, gelu=True, tile=tiles["fc1"])
    gemm.linear(a, layer.fc2.weight, layer.fc2.bias, residual=x, out=x, tile=tiles["fc2"])


def layer_rows(batch, reps: int, best) -> None:
    with torch.device("cuda"):
        model = ESM2(ESM2Config(1, 2560, 40))
    init_random(model, 0)
    model.prepare(torch.device("cuda"), Precision("fp16", "fp16"), fused=True)
    layer = model.layers[0]
    rotary = model._rotary_tables(batch.positions)[0]
    attend = PackedAttention("triton", batch, 40)
    t = batch.tokens.shape[0]
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(t, 2560, device="cuda", dtype=torch.float16, generator=g)
    y = torch.randn(t, 2560, device="cuda", dtype=torch.float16, generator=g) * 0.1
    table(f"one ESM-2 3B layer, {batch.num_tokens} tokens of 500 bp windows' proteins",
          "| path | ms | tokens/s for 36 layers |")
    tiles = {name: b[1] or (gemm.RESIDUAL_TILE if name in ("out_proj", "fc2") else gemm.TILE)
             for name, b in best.items()}
    was = esm2.QKV_ROTARY_EPILOGUE
    paths = [("fused, cuBLAS qkv + rotary pass (QKV_ROTARY_EPILOGUE off)", False,
              lambda: layer(y, x, rotary, attend, True, True)),
             ("fused, q/k rotated in qkv's Triton GEMM (QKV_ROTARY_EPILOGUE on)", True,
              lambda: layer(y, x, rotary, attend, True, True)),
             ("every epilogue in the Triton GEMMs, best tiles", was, lambda: all_epilogues(layer, x, rotary, attend, tiles))]
    for name, flag, fn in paths:
        esm2.QKV_ROTARY_EPILOGUE = flag
        ms = timed(fn, reps)
        print(f"| {name} | {ms:.3f} | {batch.num_tokens / (36 * ms / 1e3):,.0f} |", flush=True)
    esm2.QKV_ROTARY_EPILOGUE = was
    print("\nbest tiles: " + ", ".join(f"{name} {tile}" for name, tile in tiles.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    import triton

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Triton {triton.__version__}")
    with torch.inference_mode():
        batch = frames_batch(args.tokens, pad_to=args.tokens)
        with torch.device("cuda"):
            probe = ESM2(ESM2Config(1, 2560, 40))
        probe.prepare(torch.device("cuda"), Precision("fp16", "fp16"), fused=True)
        rotary = probe._rotary_tables(batch.positions)[0]
        del probe
        best = products(args.tokens, args.reps, rotary)
        layer_rows(batch, args.reps, best)


if __name__ == "__main__":
    main()
