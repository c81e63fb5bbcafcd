"""Where the first seconds of a GPU embedding process go: torch, our imports, CUDA start, FlexAttention.

    python benchmarks/startup_imports.py imports-first   # or cuda-first (CUDA started before the imports)

Prints each step's seconds (run on 2026-12-02 on an H200: results/startup_imports_H200.md).
"""
import time, sys
T = time.perf_counter()
def mark(what, t=[T]):
    now = time.perf_counter(); print(f"{what}: {now - t[0]:.2f} s", flush=True); t[0] = now
import torch; mark("import torch")
import virnucflow.engine; mark("import virnucflow.engine (pandas, h5py, ...)")
if sys.argv[1] == "cuda-first":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("CUDA init")
from torch.nn.attention.varlen import varlen_attn; mark("import varlen_attn (torch._dynamo)")
from torch.nn.attention.flex_attention import flex_attention; mark("import flex_attention")
f = torch.compile(flex_attention, dynamic=False); mark("torch.compile(flex_attention) object")
import torch._inductor.compile_fx; mark("import torch._inductor.compile_fx")
if sys.argv[1] != "cuda-first":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("CUDA init")
x = torch.randn(4096, 768, device="cuda", dtype=torch.float16); (x @ x.T).sum().item(); mark("first fp16 matmul (cuBLAS load)")
print(f"total {time.perf_counter() - T:.2f} s")
