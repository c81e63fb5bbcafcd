"""Where the time goes in one ESM-2 3B / DNABERT-S layer on this GPU (development aid).

Prints: the FP16 GEMM ceiling (8192^3), each GEMM of an ESM-2 3B layer at T
tokens, the full eager layer (packed, varlen attention), the elementwise
parts, and FlexAttention compile and run times for DNABERT-S. Used to decide
what to optimise; the benchmark of record is embed_throughput.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from virnucflow.models.attention import PackedAttention  # noqa: E402
from virnucflow.models.dnabert import DNABERT, DNABERTConfig  # noqa: E402
from virnucflow.models.esm2 import ESM2, KNOWN_CONFIGS, tokenize  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402

dev = torch.device("cuda")
h = torch.float16


def bench(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(start.elapsed_time(end))
    return float(np.median(ts))  # ms


def main(T=32768):
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    a = torch.randn(8192, 8192, device=dev, dtype=h)
    b = torch.randn(8192, 8192, device=dev, dtype=h)
    ms = bench(lambda: a @ b)
    print(f"fp16 GEMM 8192^3: {2 * 8192**3 / ms / 1e9:.0f} TFLOP/s", flush=True)
    del a, b
    E, Fd = 2560, 10240
    x = torch.randn(T, E, device=dev, dtype=h)
    total = 0.0
    for name, (k, n) in {"qkv": (E, 3 * E), "out": (E, E), "fc1": (E, Fd), "fc2": (Fd, E)}.items():
        w = torch.randn(n, k, device=dev, dtype=h) / k**0.5
        bias = torch.randn(n, device=dev, dtype=h)
        inp = x if k == E else torch.randn(T, k, device=dev, dtype=h)
        ms = bench(lambda: F.linear(inp, w, bias))
        total += ms
        print(f"  {name} [{T}x{k}]x[{k}x{n}]: {ms:.3f} ms, {2 * T * k * n / ms / 1e9:.0f} TFLOP/s", flush=True)
    print(f"GEMMs per layer {total:.2f} ms -> GEMM-only bound {T / (total * 36) * 1e3:,.0f} tok/s (36 layers)", flush=True)

    # two real layers, packed 166-residue proteins
    from virnucflow.models import kernels

    cfg = KNOWN_CONFIGS["esm2_t36_3B_UR50D"]
    with torch.device(dev):
        m = ESM2(cfg)
        m.layers = m.layers[:2]
    init_random(m, 0)
    m.prepare(dev, h)
    rng = np.random.default_rng(0)
    toks = [tokenize("".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 166))) for _ in range(T // 168)]
    batch = make_packed(toks, np.arange(len(toks))).to(dev)
    layer = m.layers[0]
    attend = PackedAttention("varlen", batch, cfg.attention_heads)
    rots = m._rotary_tables(batch.positions)
    xx = torch.randn(batch.tokens.shape[0], E, device=dev, dtype=h)
    with torch.inference_mode():
        ms = bench(lambda: m._layers(xx, rots, attend, True), 10) / 2
        print(f"layer (fused kernels, varlen): {ms:.2f} ms -> {xx.shape[0] / (ms * 36) * 1e3:,.0f} tok/s for 36 layers", flush=True)
        qkv = layer.self_attn.qkv(xx)
        print(f"  rotary in place {bench(lambda: kernels.rotary_qk_inplace(qkv, rots[0].cos, rots[0].sin, 40)):.3f} ms", flush=True)
        q, k, v = kernels.rotary_qk_inplace(qkv, rots[0].cos, rots[0].sin, 40)
        print(f"  attention varlen {bench(lambda: attend(q, k, v, 1.0)):.3f} ms", flush=True)
        ln = layer.final_layer_norm
        print(f"  add_layer_norm kernel {bench(lambda: kernels.add_layer_norm(xx, xx, ln.weight, ln.bias, 1e-5)):.3f} ms", flush=True)
        print(f"  eager add + layer_norm {bench(lambda: kernels.add_layer_norm_reference(xx, xx, ln.weight, ln.bias, 1e-5)):.3f} ms", flush=True)
        hid = torch.randn(xx.shape[0], Fd, device=dev, dtype=h)
        print(f"  gelu {bench(lambda: F.gelu(hid)):.3f} ms", flush=True)
        g2 = torch.randn(xx.shape[0] * 2, 6144, device=dev, dtype=h)
        print(f"  geglu kernel (2T x 6144) {bench(lambda: kernels.geglu(g2)):.3f} ms, eager {bench(lambda: kernels.geglu_reference(g2)):.3f} ms", flush=True)
        print(f"  full forward_packed 2 layers {bench(lambda: m.forward_packed(batch, 'varlen'), 5):.2f} ms", flush=True)
    del m, xx, hid, g2, qkv, q, k, v
    torch.cuda.empty_cache()

    # DNABERT-S with FlexAttention
    with torch.device(dev):
        d = DNABERT(DNABERTConfig())
    init_random(d, 0)
    d.prepare(dev, h)
    dt = [np.concatenate([[1], rng.integers(5, 4096, 118), [2]]) for _ in range(65536 // 120)]
    for pad_to in (65536,):
        db = make_packed(dt, np.arange(len(dt)), pad_to=pad_to, filler=3).to(dev)
        with torch.inference_mode():
            t0 = time.perf_counter()
            d.forward_packed(db, "flex")
            torch.cuda.synchronize()
            print(f"DNABERT flex first call (T={db.tokens.shape[0]}, compile): {time.perf_counter() - t0:.1f} s", flush=True)
            ms = bench(lambda: d.forward_packed(db, "flex"), 5)
            print(f"DNABERT flex forward: {ms:.1f} ms -> {db.num_tokens / ms * 1e3:,.0f} tok/s", flush=True)
            ms = bench(lambda: d.forward_packed(db, "sdpa"), 5)
            print(f"DNABERT sdpa-packed forward: {ms:.1f} ms -> {db.num_tokens / ms * 1e3:,.0f} tok/s", flush=True)
            att = PackedAttention("flex", db, 12, alibi=d.slopes(dev))
            print(f"  block mask build {bench(lambda: PackedAttention('flex', db, 12, alibi=d.slopes(dev)), 5):.2f} ms", flush=True)
            qq = torch.randn(db.tokens.shape[0], 12, 64, device=dev, dtype=h)
            print(f"  flex attention call {bench(lambda: att(qq, qq, qq, 0.125), 5):.2f} ms", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32768)
