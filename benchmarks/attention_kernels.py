"""Packed attention alone, per backend, on the two models' shapes (FP16, one GPU).

DNABERT-S: 12 heads of 64, ALiBi, windows of 105 tokens (498 bp); ESM-2 3B: 40 heads of 64, no bias,
proteins of 168 tokens; 65,536 and 32,768 packed tokens (the engines' budgets). q, k, v are strided
views of one fused projection, as in the models. Per backend: median ms per call over 50 calls
(CUDA events), and the largest difference from FlexAttention's output. The Triton kernel
(``attention_kernel.varlen_attention``) also runs with other block sizes and warp counts.

    python benchmarks/attention_kernels.py
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_util import cuda_median_ms  # noqa: E402
from virnucflow.models import attention_kernel  # noqa: E402
from virnucflow.models.attention import PackedAttention, alibi_slopes  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402

REPS = 50


def case(name, heads, length, budget, alibi):
    g = torch.Generator().manual_seed(0)
    n = budget // length
    batch = make_packed([np.zeros(length, np.int64)] * n, np.arange(n)).to("cuda")
    t = batch.tokens.shape[0]
    qkv = (torch.randn(t, 3, heads, 64, generator=g) * 2).half().cuda()
    q, k, v = qkv.unbind(1)
    slopes = torch.tensor(alibi_slopes(heads), device="cuda") if alibi else None
    scale = 64 ** -0.5
    ref = None
    rows = []
    backends = ["flex", "triton", "sdpa"] + ([] if alibi else ["varlen"])
    for backend in backends:
        att = PackedAttention(backend, batch, heads, alibi=slopes)
        out = att(q, k, v, scale)
        if ref is None:
            ref = out.float()
        ms = cuda_median_ms(lambda: att(q, k, v, scale), REPS)
        rows.append((backend, ms, float((out.float() - ref).abs().max())))
    for bm, bn, w in itertools.product((32, 64, 128), (32, 64, 128), (4, 8)):
        attention_kernel.ATTENTION_BLOCK_M, attention_kernel.ATTENTION_BLOCK_N, attention_kernel.ATTENTION_WARPS = bm, bn, w
        try:
            out = attention_kernel.varlen_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, scale, slopes)
            ms = cuda_median_ms(lambda: attention_kernel.varlen_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, scale, slopes),
                                REPS)
        except Exception as e:  # e.g. out of shared memory
            print(f"  triton {bm}x{bn} w{w}: {type(e).__name__}")
            continue
        rows.append((f"triton {bm}x{bn} w{w}", ms, float((out.float() - ref).abs().max())))
    attention_kernel.ATTENTION_BLOCK_M, attention_kernel.ATTENTION_BLOCK_N, attention_kernel.ATTENTION_WARPS = 64, 64, 4
    print(f"\n{name}: {n} sequences of {length} tokens, {t} tokens, {heads} heads of 64{', ALiBi' if alibi else ''}")
    print("| backend | ms per call | max abs diff from flex |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.2e} |")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__)
    case("DNABERT-S", 12, 105, 65536, True)
    case("ESM-2 3B", 40, 168, 32768, False)
