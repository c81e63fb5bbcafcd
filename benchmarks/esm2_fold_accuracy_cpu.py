"""ESM-2's residual fold (``esm2.FOLD_RESIDUAL``) and the tanh GELU, in FP16 on the CPU, against FP64, over seeds.

A 12-layer, 320-wide random ESM-2 (``init_random``, one model per seed) on 48
proteins of 500 bp windows, packed, ``sdpa`` attention. For each seed the
pooled vectors of four FP16 paths (the residual adds as passes or folded into
the products, each with the erf GELU or the tanh GELU that cuBLASLt's epilogue
computes, emulated here) are compared with the FP64 model; printed as ratios
to the unfused FP16 path's largest and mean absolute error. It shows how much
those ratios move between seeds (the GPU's 1.05x bound is judged on one).

    python benchmarks/esm2_fold_accuracy_cpu.py --seeds 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import virnucflow.models.esm2 as esm2  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config, TransformerLayer, tokenize  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from workloads.frames import virnucpro_frames  # noqa: E402

ERF_GELU = TransformerLayer.fc1_gelu


def tanh_gelu(layer, h, fused):
    """fc1 + tanh GELU in FP32, rounded once (what the cuBLASLt epilogue computes)."""
    if not fused:
        return ERF_GELU(layer, h, False)
    pre = F.linear(h.float(), layer.fc1.weight.float(), layer.fc1.bias.float())
    return F.gelu(pre, approximate="tanh").to(h.dtype)


def model(dtype: torch.dtype, seed: int) -> ESM2:
    m = ESM2(ESM2Config(12, 320, 20))
    init_random(m, seed)
    m._inv_freqs = [layer.self_attn.rot_emb.inv_freq.float() for layer in m.layers]  # as prepare() keeps them
    m.to(dtype)
    for layer in m.layers:
        layer.self_attn.fuse_qkv()
    return m.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4)
    args = p.parse_args()
    _, aas = virnucpro_frames(80, seed=1)
    batch = make_packed([tokenize(a) for a in aas[:48]], np.arange(48))
    # the fold on the CPU (the product runs it on GPUs only)
    ESM2.folds_residual = lambda self, x, packed: esm2.FOLD_RESIDUAL and self.fused and packed
    print("| seed | path | max abs / unfused | mean abs / unfused |\n|---|---|---|---|")
    for seed in range(args.seeds):
        with torch.no_grad():
            ref = model(torch.float64, seed).embed(batch, "sdpa").double()
            m = model(torch.float16, seed)
            m.fused = False
            base = (m.embed(batch, "sdpa").double() - ref).abs()
            m.fused = True
            for fold in (False, True):
                esm2.FOLD_RESIDUAL = fold
                for gelu, fn in (("erf", ERF_GELU), ("tanh", tanh_gelu)):
                    TransformerLayer.fc1_gelu = fn
                    err = (m.embed(batch, "sdpa").double() - ref).abs()
                    path = f"residual adds {'folded' if fold else 'as passes'}, {gelu} GELU"
                    print(f"| {seed} | {path} | {err.max() / base.max():.3f} | {err.mean() / base.mean():.3f} |",
                          flush=True)
            TransformerLayer.fc1_gelu = ERF_GELU
            esm2.FOLD_RESIDUAL = False


if __name__ == "__main__":
    main()
