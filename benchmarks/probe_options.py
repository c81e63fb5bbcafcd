"""Compare candidate fast-path options for ESM-2 3B on this GPU (development aid).

GEMMs with and without PyTorch TunableOp, token batches of 32k and 64k, varlen
attention on contiguous vs strided q/k/v, rotary eager vs the in-place kernel,
GELU. Prints medians (CUDA events) of each. (The recorded log,
results/probe_options_H200.log, also compared a Triton GELU and a rotary kernel
writing copies; both were removed after it.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.probe_layers import bench  # noqa: E402
from virnucflow.models import kernels  # noqa: E402
from virnucflow.models.attention import PackedAttention  # noqa: E402
from virnucflow.models.esm2 import tokenize  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402

dev, h = torch.device("cuda"), torch.float16
E, Fd, H, D = 2560, 10240, 40, 64


def gemms(T: int, label: str) -> float:
    x = torch.randn(T, E, device=dev, dtype=h)
    xf = torch.randn(T, Fd, device=dev, dtype=h)
    total = 0.0
    for name, (k, n) in {"qkv": (E, 3 * E), "out": (E, E), "fc1": (E, Fd), "fc2": (Fd, E)}.items():
        w = torch.randn(n, k, device=dev, dtype=h) / k**0.5
        b = torch.randn(n, device=dev, dtype=h)
        inp = x if k == E else xf
        ms = bench(lambda: F.linear(inp, w, b))
        total += ms
        print(f"  {label} T={T} {name}: {ms:.3f} ms {2 * T * k * n / ms / 1e9:.0f} TFLOP/s", flush=True)
    print(f"  {label} T={T} GEMMs/layer {total:.3f} ms -> bound {T / (total * 36) * 1e3:,.0f} tok/s", flush=True)
    return total


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for T in (32768, 65536):
        gemms(T, "cublas")
    torch.cuda.tunable.enable(True)
    torch.cuda.tunable.tuning_enable(True)
    torch.cuda.tunable.set_max_tuning_duration(300)
    torch.cuda.tunable.set_filename("/tmp/tunableop.csv")
    for T in (32768, 65536):
        gemms(T, "tunable")
    torch.cuda.tunable.enable(False)

    rng = np.random.default_rng(0)
    for T in (32768, 65536):
        toks = [tokenize("".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 166))) for _ in range(T // 168)]
        batch = make_packed(toks, np.arange(len(toks))).to(dev)
        t = batch.tokens.shape[0]
        attend = PackedAttention("varlen", batch, H)
        qkv = torch.randn(t, 3 * E, device=dev, dtype=h)
        cos = torch.randn(t, D, device=dev)
        sin = torch.randn(t, D, device=dev)
        qs, ks, vs = kernels.rotary_qk_inplace(qkv.clone(), cos, sin, H)
        q, k, v = (x.contiguous() for x in (qs, ks, vs))
        with torch.inference_mode():
            print(f"T={t}: varlen contiguous {bench(lambda: attend(q, k, v, 1.0)):.3f} ms, "
                  f"strided {bench(lambda: attend(qs, ks, vs, 1.0)):.3f} ms", flush=True)
            print(f"T={t}: rotary eager {bench(lambda: kernels.rotary_qkv_reference(qkv, cos, sin, H)):.3f} ms, "
                  f"in place {bench(lambda: kernels.rotary_qk_inplace(qkv, cos, sin, H)):.3f} ms", flush=True)
            hid = torch.randn(t, Fd, device=dev, dtype=h)
            print(f"T={t}: gelu eager {bench(lambda: F.gelu(hid)):.3f} ms", flush=True)


if __name__ == "__main__":
    main()
