"""Checks of the Triton kernels against their PyTorch references (run by test_engine.py
under TRITON_INTERPRET=1, i.e. on the CPU through Triton's interpreter).

Tolerances: the kernels do the same FP32 arithmetic as the references, in
another order (1e-6 on unit-scale values; 1e-5 through whole models).
"""

import copy
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
assert os.environ.get("TRITON_INTERPRET") == "1"

from virnucflow.models import kernels  # noqa: E402
from virnucflow.models.dnabert import DNABERT, DNABERTConfig  # noqa: E402
from virnucflow.models.esm2 import ESM2, ESM2Config, tokenize  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from virnucflow.models.packing import make_packed  # noqa: E402
from virnucflow.workloads import mixed_frames  # noqa: E402

passed = 0
g = torch.Generator().manual_seed(0)

# rotary, in place on the fused projection
t, heads, d = 70, 4, 16
qkv = torch.randn(t, 3 * heads * d, generator=g)
freqs = torch.rand(t, d // 2, generator=g) * 10
cos, sin = torch.cat([freqs, freqs], 1).cos(), torch.cat([freqs, freqs], 1).sin()
expected = kernels.rotary_qkv_reference(qkv, cos, sin, heads)
for a, b in zip(kernels.rotary_qk_inplace(qkv.clone(), cos, sin, heads), expected):
    assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
passed += 1

# GEGLU
h = torch.randn(9, 2 * 300, generator=g)
assert torch.allclose(kernels.geglu(h), kernels.geglu_reference(h), atol=1e-6)
passed += 1

# add + LayerNorm, with and without the sum
x, y = torch.randn(5, 100, generator=g), torch.randn(5, 100, generator=g)
w, b = torch.randn(100, generator=g), torch.randn(100, generator=g)
s1, n1 = kernels.add_layer_norm(x, y, w, b, 1e-5)
s2, n2 = kernels.add_layer_norm_reference(x, y, w, b, 1e-5)
assert torch.equal(s1, s2) and torch.allclose(n1, n2, atol=1e-5)
assert kernels.add_layer_norm(x, y, w, b, 1e-5, write_sum=False)[0] is None
passed += 1

# whole models, fused kernels vs plain PyTorch
_, aas = mixed_frames(8, seed=1, high=200)
esm = ESM2(ESM2Config(3, 64, 4))
init_random(esm, 0)
dn = DNABERT(DNABERTConfig(vocab_size=64, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=96))
init_random(dn, 1)
rng = np.random.default_rng(2)
for model, tokens in ((esm, [tokenize(a) for a in aas]),
                      (dn, [np.concatenate([[1], rng.integers(5, 64, int(k)), [2]]) for k in rng.integers(1, 150, 8)])):
    m = copy.deepcopy(model).prepare(torch.device("cpu"), torch.float32)
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50)
    with torch.no_grad():
        fused = m.embed(batch, "sdpa")
        os.environ["VIRNUCFLOW_TRITON"] = "0"
        plain = m.embed(batch, "sdpa")
        os.environ["VIRNUCFLOW_TRITON"] = "1"
    assert (fused - plain).abs().max() < 1e-5, (fused - plain).abs().max()
passed += 1
print(f"kernel checks: {passed} passed")
