"""ESM-2's residual fold (``esm2.FOLD_RESIDUAL``), the tanh GELU and the q|k|v GEMM's rotary epilogue
(``esm2.QKV_ROTARY_EPILOGUE``), in FP16 on the CPU, against FP64, over seeds.

A 12-layer, 320-wide random ESM-2 (``init_random``, one model per seed) on 48
proteins of 500 bp windows, packed, ``sdpa`` attention. For each seed the
pooled vectors of eight FP16 paths (the residual adds as passes or folded into
the products; the erf GELU or the tanh GELU that cuBLASLt's epilogue computes;
q and k rotated by a pass over the rounded projection or on the FP32 product
before its one rounding, as the Triton GEMM's epilogue does; the two epilogues
emulated here in FP32) are compared with the FP64 model; printed as ratios
to the unfused FP16 path's largest and mean absolute error, then their
median and range over the seeds. It shows how much those ratios move between
seeds (the GPU's 1.05x bound is judged on one set of frames).

    python benchmarks/esm2_fold_accuracy_cpu.py --seeds 8
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
from virnucflow.models import gemm  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config, MultiheadAttention, TransformerLayer, tokenize  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from workloads.frames import virnucpro_frames  # noqa: E402

ERF_GELU = TransformerLayer.fc1_gelu
ROTARY_PASS = MultiheadAttention.project_rotated


def rotary_epilogue(attn, x, rotary, packed, fused=False):
    """q|k|v product + bias in FP32, q and k rotated, one rounding (the Triton GEMM's epilogue)."""
    if not (fused and packed):
        return ROTARY_PASS(attn, x, rotary, packed, fused)
    e = attn.num_heads * attn.head_dim
    qkv = gemm.linear_reference(x, attn.qkv.weight, attn.qkv.bias, rotary=(rotary.cos, rotary.sin, 2 * e, attn.head_dim))
    return qkv.view(x.shape[0], 3, attn.num_heads, attn.head_dim).unbind(1)


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
    p.add_argument("--seeds", type=int, default=8)
    args = p.parse_args()
    _, aas = virnucpro_frames(80, seed=1)
    batch = make_packed([tokenize(a) for a in aas[:48]], np.arange(48))
    # the fold on the CPU (the product runs it on GPUs only)
    ESM2.folds_residual = lambda self, x, packed: esm2.FOLD_RESIDUAL and self.fused and packed
    ratios: dict[str, list[tuple[float, float]]] = {}
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
                    for rope, project in (("rotary pass", ROTARY_PASS), ("rotary epilogue", rotary_epilogue)):
                        MultiheadAttention.project_rotated = project
                        err = (m.embed(batch, "sdpa").double() - ref).abs()
                        path = f"residual adds {'folded' if fold else 'as passes'}, {gelu} GELU, {rope}"
                        r = (float(err.max() / base.max()), float(err.mean() / base.mean()))
                        ratios.setdefault(path, []).append(r)
                        print(f"| {seed} | {path} | {r[0]:.3f} | {r[1]:.3f} |", flush=True)
            TransformerLayer.fc1_gelu = ERF_GELU
            MultiheadAttention.project_rotated = ROTARY_PASS
            esm2.FOLD_RESIDUAL = False
    print(f"\nOver {args.seeds} seeds:\n\n| path | max abs / unfused: median (range) | mean abs / unfused: median (range) |"
          "\n|---|---|---|")
    for path, rs in ratios.items():
        mx, mn = np.array([r[0] for r in rs]), np.array([r[1] for r in rs])
        print(f"| {path} | {np.median(mx):.3f} ({mx.min():.3f}-{mx.max():.3f}) | "
              f"{np.median(mn):.3f} ({mn.min():.3f}-{mn.max():.3f}) |")


if __name__ == "__main__":
    main()
