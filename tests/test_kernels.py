"""The fused Triton kernels against their PyTorch references.

On a GPU they run as compiled kernels. Without one they run through Triton's
CPU interpreter, which must be chosen before Triton is first imported: the
module then runs itself again in a fresh process with ``TRITON_INTERPRET=1``
(:func:`test_kernels_in_the_interpreter`) and its other tests are skipped here.

Tolerances: the kernels do the same FP32 arithmetic as the references in
another order: 1e-6 on unit-scale values, 1e-5 through whole models.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucflow.models import attention_kernel, fp8, gemm, kernels
from virnucflow.models.dnabert_s import DNABERTS, DNABERTSConfig
from virnucflow.models.attention import PackedAttention
from virnucflow.models.esm2 import ESM2, ESM2Config, tokenize
from virnucflow.models.packing import make_packed
from virnucflow.models.precision import Precision
from virnucflow.models.random_weights import init_random

from workloads.frames import mixed_frames

pytest.importorskip("triton", reason="Triton is needed to run or interpret the kernels")


CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(scope="module")
def device():
    if not (CUDA or INTERPRETED):
        pytest.skip("no GPU: run under Triton's interpreter by test_kernels_in_the_interpreter")
    return torch.device("cuda" if CUDA else "cpu")


@pytest.mark.skipif(CUDA or INTERPRETED, reason="the kernels run directly here")
def test_kernels_in_the_interpreter():
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                         env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith("40 passed")


@pytest.mark.parametrize("heads", [4, 5])  # q and k heads: 8 = one program's worth, 10 = some masked
def test_rotary_in_place_on_the_fused_projection(device, heads):
    g = torch.Generator().manual_seed(0)
    t, d = 70, 16
    qkv = torch.randn(t, 3 * heads * d, generator=g).to(device)
    freqs = torch.rand(t, d // 2, generator=g).to(device) * 10
    cos, sin = torch.cat([freqs, freqs], 1).cos(), torch.cat([freqs, freqs], 1).sin()
    assert kernels.use_triton(qkv)
    expected = kernels.rotary_qkv_reference(qkv, cos, sin, heads)
    for a, b in zip(kernels.rotary_qk_inplace(qkv.clone(), cos, sin, heads), expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_geglu(device):
    h = torch.randn(9, 2 * 300, generator=torch.Generator().manual_seed(1)).to(device)
    torch.testing.assert_close(kernels.geglu(h), kernels.geglu_reference(h), atol=1e-6, rtol=0)


def test_add_layer_norm_with_and_without_the_sum(device):
    g = torch.Generator().manual_seed(2)
    x, y, w, b = (torch.randn(*shape, generator=g).to(device) for shape in ((5, 100), (5, 100), (100,), (100,)))
    s1, n1 = kernels.add_layer_norm(x, y, w, b, 1e-5)
    s2, n2 = kernels.add_layer_norm_reference(x, y, w, b, 1e-5)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(n1, n2, atol=1e-5, rtol=0)
    assert kernels.add_layer_norm(x, y, w, b, 1e-5, write_sum=False)[0] is None
    # precision fp8: the normalised rows in E4M3 with one scale per row (the scales of the
    # reference's rows; values checked on GPUs, see test_fp8_row_quantisation)
    s3, (q, scale) = fp8.add_layer_norm_quantized(x, y, w, b, 1e-5)
    assert torch.equal(s3, s2) and q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    torch.testing.assert_close(scale, n2.abs().amax(1, keepdim=True) / 448, atol=0, rtol=1e-5)
    if not INTERPRETED:
        torch.testing.assert_close(q.float() * scale, n2, atol=float(scale.max()) * 2**-9, rtol=2**-4)


def test_layer_norm_alone(device):
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(*shape, generator=g).to(device) for shape in ((5, 100), (100,), (100,)))
    s, n = kernels.add_layer_norm(x, None, w, b, 1e-5)
    assert s is x
    torch.testing.assert_close(n, torch.nn.functional.layer_norm(x, (100,), w, b, 1e-5), atol=1e-5, rtol=0)


SMALL_TILES = [gemm.Tile(32, 64, 32, 2, 4, group_m=2),  # persistent: programs walk several tiles
               gemm.Tile(32, 64, 32, 2, 4, group_m=2, persistent=False)]


def _gemm_operands(device, m=70, k=96, n=192, d=32):
    """FP16 operands with |x @ w.T + b| < 2, where FP16's spacing is at most 2**-10 (so 2e-3 is one
    rounding step either way), and FP32 cos/sin rows for heads of ``d``."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(m, k, generator=g).half().to(device)
    w = (torch.randn(n, k, generator=g) * 0.25 * k ** -0.5).half().to(device)
    b = (torch.randn(n, generator=g) * 0.1).half().to(device)
    r = (torch.randn(m, n, generator=g) * 0.3).half().to(device)
    freqs = torch.rand(m, d // 2, generator=g) * 10
    cos, sin = (f(torch.cat([freqs, freqs], 1)).to(device) for f in (torch.cos, torch.sin))
    return x, w, b, r, (cos, sin, 128, d)


@pytest.mark.parametrize("tile", SMALL_TILES, ids=["persistent", "a-tile-each"])
@pytest.mark.parametrize("epilogue", ["bias", "gelu", "rotary", "residual"])
def test_gemm_epilogues_against_the_fp32_reference(device, epilogue, tile):
    """The Triton GEMM with each epilogue against the same arithmetic in FP32 rounded once (FP16
    2e-3: one rounding step at these magnitudes); 70 rows (a partial last row-tile), a weight of 6
    column-tiles. Mutations: a flipped sign in the rotation, the GELU or the residual left out,
    each fail here by > 0.05 (checked)."""
    x, w, b, r, rope = _gemm_operands(device)
    kw = {"gelu": {"gelu": True}, "rotary": {"rotary": rope}, "residual": {"residual": r}}.get(epilogue, {})
    assert gemm.runs_fused(x, w, kw.get("rotary"), tile)
    ref = gemm.linear_reference(x.float(), w.float(), b.float(), **{k: (v.float() if k == "residual" else v)
                                                                    for k, v in kw.items()})
    assert ref.abs().max() < 2 and ref.abs().max() > 0.5
    out = gemm.linear(x, w, b, tile=tile, **kw)
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=0)
    if epilogue == "residual":  # in place, as ESM-2's residual stream would be updated
        stream = r.clone()
        assert gemm.linear(x, w, b, residual=stream, out=stream, tile=tile) is stream
        torch.testing.assert_close(stream.float(), ref, atol=2e-3, rtol=0)


def test_gemm_rotary_reference_is_the_rotary_pass():
    """linear_reference's rotary epilogue (FP32) is fair-esm's rotation of q and k as the unfused
    path applies it to the projection (kernels.rotary_qkv_reference), v untouched."""
    x, w, b, _, (cos, sin, _, d) = _gemm_operands(torch.device("cpu"), n=3 * 64)
    x, w, b = x.float(), w.float(), b.float()
    q, k, v = kernels.rotary_qkv_reference(torch.nn.functional.linear(x, w, b), cos, sin, 2)
    fused = gemm.linear_reference(x, w, b, rotary=(cos, sin, 128, d)).view(-1, 3, 2, d)
    for a, e in zip(fused.unbind(1), (q, k, v)):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=0)


def test_gemm_takes_only_what_it_tiles(device):
    """Rotary columns that split a tile, or heads that split across tiles, and FP32 rows fall back
    to the PyTorch reference (same values)."""
    x, w, b, _, (cos, sin, _, d) = _gemm_operands(device)
    tile = SMALL_TILES[0]
    assert not gemm.runs_fused(x, w, (cos, sin, 96, d), tile)  # 96 columns: 1.5 tiles of 64
    assert not gemm.runs_fused(x, w, (cos, sin, 128, 128), tile)  # a head wider than a tile
    assert not gemm.runs_fused(x.float(), w.float(), None, tile)
    out = gemm.linear(x, w, b, rotary=(cos, sin, 96, d), tile=tile)  # three heads of 32
    torch.testing.assert_close(out, gemm.linear_reference(x, w, b, rotary=(cos, sin, 96, d)), atol=0, rtol=0)


def test_esm2_qkv_rotary_epilogue_against_the_rotary_pass(device, monkeypatch):
    """The fused FP16 ESM-2 (packed) with q and k rotated by the q|k|v GEMM (QKV_ROTARY_EPILOGUE,
    off by default, switched on here) against
    the rotary pass over the rounded projection: both as far from the FP32 model, the GEMM taken in
    every layer. FP16: the two differ by the rounding of q and k before or after the rotation."""
    model = ESM2(ESM2Config(2, 128, 4))  # heads of 32, 2E = 256 columns: one tile of TILE
    init_random(model, 0)
    tokens = [tokenize(a) for a in mixed_frames(8, seed=1, high=200)[1]][:3]
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50).to(device)
    ref = copy.deepcopy(model).prepare(device, Precision("fp32", "fp32"), fused=False)
    m = model.prepare(device, Precision("fp16", "fp16"), fused=True)
    monkeypatch.setattr("virnucflow.models.esm2.QKV_ROTARY_EPILOGUE", True)
    calls = []
    real = gemm.linear
    monkeypatch.setattr(gemm, "linear", lambda *a, **k: calls.append(k.get("rotary")) or real(*a, **k))
    with torch.no_grad():
        exact = ref.embed(batch, "triton")
        epilogue = m.embed(batch, "triton").float()
        assert len(calls) == 2 and all(c is not None and c[2] == 256 for c in calls)
        monkeypatch.setattr("virnucflow.models.esm2.QKV_ROTARY_EPILOGUE", False)
        passes = m.embed(batch, "triton").float()
    assert len(calls) == 2
    err_epilogue, err_passes = (epilogue - exact).abs().max(), (passes - exact).abs().max()
    assert err_epilogue < 2e-3 and err_passes < 2e-3 and err_epilogue < 1.5 * err_passes
    assert (epilogue - passes).abs().max() < 2e-3


@pytest.mark.parametrize("head_size", [24, 64])
@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_attention_against_the_per_sequence_reference(device, alibi, dtype, head_size):
    """Packed sequences of 1 to 150 tokens (one and several query and key blocks of 64), q/k/v as
    strided views of one fused projection, the models' head size (64) and one that is not a power
    of two (24, ESM-2 35M's: padded to 32 in the kernel), filler tokens at the end. FP32: the same arithmetic in
    another order (1e-5). FP16: the kernel rounds the softmax weights to FP16 before the product
    with V (FlashAttention's choice; relative error <= 2**-11 per weight), the reference does not:
    2e-3 on outputs of unit scale."""
    g = torch.Generator().manual_seed(4)
    lengths = [1, 37, 64, 65, 150, 128, 2]
    heads, d, tail = 3, head_size, 11
    t = sum(lengths) + tail
    qkv = torch.randn(t, 3, heads, d, generator=g).to(device=device, dtype=dtype)
    q, k, v = qkv.unbind(1)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=device)
    slopes = torch.tensor([0.5, 0.125, 2 ** -0.5], device=device) if alibi else None
    out = attention_kernel.varlen_attention(q, k, v, cu, max(lengths), d ** -0.5, slopes, pad_tail=tail)
    ref = attention_kernel.varlen_attention_reference(q, k, v, cu, d ** -0.5, slopes)
    assert out.shape == (t, heads, d) and out.dtype == dtype
    assert torch.equal(out[-tail:], torch.zeros_like(out[-tail:]))
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-5 if dtype == torch.float32 else 2e-3, rtol=0)
    # ALiBi changes the result (the slopes reach the kernel)
    if alibi:
        plain = attention_kernel.varlen_attention_reference(q, k, v, cu, d ** -0.5)
        assert (plain.float() - out.float()).abs().max() > 0.1


@pytest.mark.parametrize("head_size", [32, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_attention_rotating_q_and_k_as_it_loads_them(device, dtype, head_size):
    """ESM-2's fused path: the kernel applies the rotary embedding (FP32 cos/sin per position) to q
    and k as it loads them, against the unfused path (rotate in place, then attend) and the
    reference. Rotation rounded to the inputs' dtype in both: FP32 1e-5, FP16 2e-3 (as above)."""
    g = torch.Generator().manual_seed(5)
    lengths = [1, 37, 65, 150, 2]
    heads, d, tail = 3, head_size, 7
    t = sum(lengths) + tail
    qkv = torch.randn(t, 3 * heads * d, generator=g).to(device=device, dtype=dtype)
    positions = torch.cat([torch.arange(n) for n in lengths] + [torch.zeros(tail, dtype=torch.long)])
    freqs = torch.arange(max(lengths) + 3).float()[:, None] * (1.0 / 10000 ** (torch.arange(0, d, 2).float() / d))[None, :]
    cos, sin = (f(torch.cat([freqs, freqs], 1)).to(device) for f in (torch.cos, torch.sin))  # per position
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=device)
    q, k, v = qkv.view(t, 3, heads, d).unbind(1)
    out = attention_kernel.varlen_attention(q, k, v, cu, max(lengths), d ** -0.5, pad_tail=tail, rotary=(cos, sin))
    ref = attention_kernel.varlen_attention_reference(q, k, v, cu, d ** -0.5, rotary=(cos, sin))
    # the unfused path: tables per token, rotated in place, then attention
    per_token = cos[positions.to(device)], sin[positions.to(device)]
    unfused = attention_kernel.varlen_attention(*kernels.rotary_qk_inplace(qkv.clone(), *per_token, heads), cu,
                                                max(lengths), d ** -0.5, pad_tail=tail)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.equal(out[-tail:], torch.zeros_like(out[-tail:]))
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=0)
    torch.testing.assert_close(out.float(), unfused.float(), atol=tol, rtol=0)
    # the rotation matters (a kernel that skipped it, or flipped rotate_half's sign, fails above)
    plain = attention_kernel.varlen_attention_reference(q, k, v, cu, d ** -0.5)
    assert (plain.float() - out.float()).abs().max() > 0.1


def test_esm2_fused_against_unfused(device, monkeypatch):
    """The whole ESM-2 on the ``triton`` backend, ``fused`` with the rotary inside the attention
    kernel against the unfused path (in-place rotary pass): FP32 1e-5. (FP32 keeps the erf GELU pass:
    cuBLASLt's GELU epilogue runs for FP16/BF16 on GPUs, test_esm2_gelu_epilogue_on_the_gpu.)"""
    _, tokens = _small_model("esm2")
    model = ESM2(ESM2Config(2, 128, 4))  # heads of 32: the smallest the kernel rotates
    init_random(model, 0)
    tokens = [tokens[i] for i in (3, 6)]
    m = model.prepare(device, Precision("fp32", "fp32"), fused=True)
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50).to(device)
    assert PackedAttention("triton", batch, 4).rotates_inside(32)
    monkeypatch.setattr("virnucflow.models.esm2.ROTARY_IN_ATTENTION", True)  # (off by default: slower)
    with torch.no_grad():
        m.fused = True
        fused = m.embed(batch, "triton")
        m.fused = False
        plain = m.embed(batch, "triton")
    assert (fused - plain).abs().max() < 1e-5


def test_esm2_residual_folded_into_the_products_against_unfused(device, monkeypatch):
    """The fused path's layers with the residual adds in out_proj's and fc2's products and their
    biases carried as one row that the LayerNorms add (``forward_folded``: ``esm2.FOLD_RESIDUAL``,
    off by default, for FP16/BF16 on GPUs; forced here in FP32) against the unfused layers: FP32
    1e-5. The model's biases
    are made large, so a bias left out or added twice fails by far more."""
    model, tokens = _small_model("esm2")
    tokens = [tokens[i] for i in (3, 6)]
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.out_proj.bias.normal_(0, 1)
            layer.fc2.bias.normal_(0, 1)
    m = model.prepare(device, Precision("fp32", "fp32"), fused=True)
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50).to(device)
    with torch.no_grad():
        plain = m.embed(batch, "triton")
        monkeypatch.setattr(ESM2, "folds_residual", lambda self, x, packed: packed)
        folded = m.embed(batch, "triton")
    assert (folded - plain).abs().max() < 1e-5
    assert plain.abs().max() > 0.1


@pytest.mark.skipif(not CUDA, reason="cuBLASLt's GELU epilogue runs on GPUs only")
def test_esm2_gelu_epilogue_on_the_gpu():
    """fc1 + GELU in one cuBLASLt GEMM (FP16): the tanh-approximation GELU of the FP16 product
    (2e-3, FP16 rounding), and within the tanh approximation's distance of the erf GELU."""
    from virnucflow.models.esm2 import TransformerLayer

    g = torch.Generator().manual_seed(6)
    layer = TransformerLayer(ESM2Config(1, 256, 4)).cuda().half()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        h = torch.randn(300, 256, generator=g).cuda().half()
        fused, plain = layer.fc1_gelu(h, True), layer.fc1_gelu(h, False)
        pre = torch.nn.functional.linear(h.float(), layer.fc1.weight.float(), layer.fc1.bias.float())
    tanh = torch.nn.functional.gelu(pre, approximate="tanh")
    torch.testing.assert_close(fused.float(), tanh, atol=2e-3, rtol=0)
    torch.testing.assert_close(plain.float(), torch.nn.functional.gelu(pre), atol=2e-3, rtol=0)
    assert (fused.float() - plain.float()).abs().max() < 2e-3 + 5e-4  # |tanh - erf GELU| <= 4.7e-4


@pytest.mark.parametrize("which", ["esm2", "dnabert_s"])
def test_whole_models_on_the_triton_attention_kernel(device, which):
    """The ``triton`` packed backend inside both models (FP32 weights: the kernel's FP32 path)
    against the ``sdpa`` backend on the same packed batch, with filler tokens: 1e-5."""
    model, tokens = _small_model(which)
    # the interpreter runs every program in Python: a few sequences of one, two and three blocks of 64
    tokens = [tokens[i] for i in ((3, 6) if which == "esm2" else (0, 1, 2))]
    m = model.prepare(device, Precision("fp32", "fp32"), fused=True)
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50).to(device)
    with torch.no_grad():
        assert (m.embed(batch, "triton") - m.embed(batch, "sdpa")).abs().max() < 1e-5


def _small_model(which, dnabert_hidden=64, dnabert_heads=4):
    """A 3-layer ESM-2 (8 proteins of <= 200 residues) or a 2-layer DNABERT-S (8 windows of
    3-151 tokens), random weights."""
    if which == "esm2":
        model = ESM2(ESM2Config(3, 64, 4))
        tokens = [tokenize(a) for a in mixed_frames(8, seed=1, high=200)[1]]
    else:
        model = DNABERTS(DNABERTSConfig(vocab_size=64, hidden_size=dnabert_hidden, num_hidden_layers=2,
                                      num_attention_heads=dnabert_heads, intermediate_size=96))
        rng = np.random.default_rng(2)
        tokens = [np.concatenate([[1], rng.integers(5, 64, int(k)), [2]]) for k in rng.integers(1, 150, 8)]
    init_random(model, 0)
    return model, tokens


@pytest.mark.parametrize("which", ["esm2", "dnabert_s"])
def test_whole_models_fused_against_plain_pytorch(device, which, monkeypatch):
    model, tokens = _small_model(which, dnabert_hidden=48, dnabert_heads=6)
    m = model.prepare(device, Precision("fp32", "fp32"), fused=True)
    batch = make_packed(tokens, np.arange(len(tokens)), pad_to=sum(len(t) for t in tokens) + 50).to(device)
    with torch.no_grad():
        fused = m.embed(batch, "sdpa")
        monkeypatch.setenv("VIRNUCFLOW_TRITON", "0")
        plain = m.embed(batch, "sdpa")
    assert (fused - plain).abs().max() < 1e-5


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_fp8_row_quantisation(device, activation, one_pass):
    """The Triton pass against the reference: the same scales, and E4M3 values equal but for
    rare one-step rounding differences where the two erf implementations differ in the last bit."""
    from virnucflow.models import fp8

    x = torch.randn(37, 2500, generator=torch.Generator().manual_seed(3)) * 3
    x[5] = 0  # a row of zeros stays zeros
    x = x.to(device)
    q, s = fp8.quantize_rows(x, activation, one_pass)
    q_ref, s_ref = fp8.quantize_rows_reference(x, activation)
    assert q.dtype == q_ref.dtype == fp8.FP8 and s.shape == s_ref.shape == (37, 1)
    torch.testing.assert_close(s, s_ref, atol=0, rtol=1e-6)
    assert torch.equal(q[5].float(), torch.zeros(2500, device=device))
    if INTERPRETED:
        # Triton 3.9's interpreter converts FP32 to E4M3 wrongly where rounding carries into the
        # exponent (127.9 -> 64, not 128): the values are checked on GPUs only
        return
    a, b = q.float(), q_ref.float()
    differ = a != b
    assert differ.float().mean() < 1e-3  # Triton's FP32 division and erf may differ in the last bit
    # E4M3 steps are 2**-3 relative (2**-9 absolute below 2**-6, the subnormals)
    assert ((a - b).abs() <= torch.maximum(b.abs() * 2**-3, torch.full_like(b, 2**-9)))[differ].all()


def test_fp8_gelu_quantisation_of_rows_in_the_negative_lobe(device):
    """Rows whose largest |GELU| lies in GELU's negative lobe (min -0.17 at x = -0.75): all values
    negative, or the largest one small. The scales must still be the reference's."""
    from virnucflow.models import fp8

    g = torch.Generator().manual_seed(7)
    x = -torch.rand(4, 3000, generator=g) * 4  # all negative
    x[1, 10] = 0.1  # max 0.1: GELU(0.1) = 0.054 < |GELU(-0.75)|
    x[2, 11] = 0.4  # GELU(0.4) = 0.26: the positive side wins
    x[3] = -0.75 + torch.rand(3000, generator=g) * 1e-3  # next to the minimum
    _, s = fp8.quantize_rows(x.to(device), "gelu")
    _, s_ref = fp8.quantize_rows_reference(x, "gelu")
    torch.testing.assert_close(s.cpu(), s_ref, atol=0, rtol=1e-6)


def test_fp8_fast_erf_gelu_is_the_erf_gelu(device):
    """The row quantisation's GELU (erf by Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7) against
    PyTorch's erf GELU, through the quantisation's scales (each row's amax of GELU(x) / 448)."""
    from virnucflow.models import fp8

    x = torch.linspace(-8, 8, 4001).reshape(1, -1).repeat(3, 1)
    x[1] *= 0.01
    x[2] = x[2].flip(0) * 3
    _, s = fp8.quantize_rows(x.to(device), "gelu")
    _, s_ref = fp8.quantize_rows_reference(x, "gelu")
    torch.testing.assert_close(s.cpu(), s_ref, atol=0, rtol=2e-7 * 448 / s_ref.min().item() + 1e-6)
    a = torch.nn.functional.gelu(x.double())
    z = x.double() / 2**0.5
    t = 1 / (1 + 0.3275911 * z.abs())
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = torch.sign(z) * (1 - poly * torch.exp(-z * z))
    assert (0.5 * x.double() * (1 + erf) - a).abs().max() < 8 * 1.5e-7 * 1.01  # |x| <= 24: 0.5 |x| |erf err|
