"""ESM-2 3B's four GEMM shapes at 32,768 tokens (FP16): ways of calling cuBLAS(Lt), timed alike.

For each shape: ``F.linear`` (cuBLASLt bias epilogue, what the layer runs), ``mm`` without bias,
``addmm`` on a pre-transposed contiguous weight, and for fc1 ``_addmm_activation`` (GELU
epilogue). Median of ``--reps`` CUDA-event timings; prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_util import cuda_median_ms as timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    t, e = args.tokens, 2560
    shapes = {"qkv": (e, 3 * e), "out_proj": (e, e), "fc1": (e, 4 * e), "fc2": (4 * e, e)}
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"| shape (tokens {t}) | call | ms | TFLOP/s |\n|---|---|---|---|")
    for name, (k, n) in shapes.items():
        x = torch.randn(t, k, device="cuda", dtype=torch.float16, generator=g)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g) * k ** -0.5
        b = torch.randn(n, device="cuda", dtype=torch.float16, generator=g)
        wt = w.t().contiguous()
        calls = {"F.linear (bias epilogue)": lambda: F.linear(x, w, b), "mm, no bias": lambda: x @ w.t(),
                 "addmm, weight pre-transposed": lambda: torch.addmm(b, x, wt)}
        if name == "fc1":
            calls["_addmm_activation GELU epilogue"] = lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True)
            calls["F.linear + F.gelu (erf)"] = lambda: F.gelu(F.linear(x, w, b))
        for call, fn in calls.items():
            ms = timed(fn, args.reps)
            print(f"| {name} | {call} | {ms:.3f} | {2 * t * k * n / ms / 1e9:.0f} |")


if __name__ == "__main__":
    main()
