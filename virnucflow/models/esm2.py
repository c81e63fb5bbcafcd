"""ESM-2 (Lin et al. 2023), as fair-esm's ``esm.model.esm2.ESM2`` computes it.

Architecture: learned token embeddings (scale 1) with the token-dropout
rescale that fair-esm applies at inference too (``x * 0.88 / (1 - mask
ratio)``, per sequence), then ``num_layers`` pre-LN transformer layers
(``x += attn(LN(x))``, ``x += fc2(gelu(fc1(LN(x))))``, erf GELU, FFN 4x),
self-attention with separate q/k/v/out projections, q scaled by
``head_dim**-0.5`` *before* the rotary embedding (NeoX rotate-half, applied to
q and k, positions starting at 0 on ``<cls>``, ``inv_freq`` read from the
checkpoint), and a final ``emb_layer_norm_after``. Module and parameter names
follow fair-esm, so its state dict loads unchanged (the LM and contact heads
are not needed for embeddings and are not built).

Each :class:`TransformerLayer` has its own ``forward`` in vLLM's
``(hidden, residual) -> (hidden, residual)`` convention, so every residual add
is fused with the LayerNorm that follows it, also across layer boundaries.
Two forwards share the layers:

- :meth:`ESM2.forward_padded`: (B, L) padded tokens, the reference path
  (fair-esm's layout, key padding mask, FP32 softmax);
- :meth:`ESM2.forward_packed`: (T,) packed tokens with ``cu_seqlens``, rotary
  positions restarting at each sequence and computed once per batch in FP32,
  token-dropout rescale per sequence, packed attention backends.

``ESM2.fused`` (config ``embedding.fused``, default on) runs fc1's GELU in
cuBLASLt's GEMM epilogue (FP16/BF16 on a GPU; the tanh approximation of GELU);
with ``QKV_ROTARY_EPILOGUE`` (off, see there) it rotates q and k in the q|k|v
projection's GEMM epilogue (a Triton GEMM, FP16 on a GPU), with
``FOLD_RESIDUAL`` (off, see there) on packed FP16/BF16 rows on a GPU, the
residual adds inside out_proj's and fc2's GEMMs (:meth:`TransformerLayer.forward_folded`);
with ``ROTARY_IN_ATTENTION`` (off: slower) the ``triton`` attention kernel
rotates q and k as it loads them. Off, the layer runs the separate erf-GELU pass
and each residual add inside the add+LayerNorm pass (the reference the tests
compare with). The bias adds are the GEMMs' epilogues.

Pooling (:meth:`ESM2.embed`) is the original VirNucPro's: mean of the last
layer over residues only, first 1024 residues.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from . import fp8, gemm, kernels
from .attention import PackedAttention, PaddedAttention
from .packing import PackedBatch, PaddedBatch
from .pooling import ESM_POOLING, PooledEncoder
from .precision import Precision
from .rotary import Rotary, RotaryEmbedding

log = logging.getLogger("virnucflow")

# fair-esm's alphabet ("ESM-1b" architecture): prepend <cls>, append <eos>, pad with <pad>.
ALPHABET = (
    ["<cls>", "<pad>", "<eos>", "<unk>"]
    + list("LAGVSERTIDPKQNFYMHWCXBUZO.-")
    + ["<null_1>", "<mask>"]
)
CLS, PAD, EOS, UNK = 0, 1, 2, 3
MASK = ALPHABET.index("<mask>")  # 32
_LOOKUP = np.full(256, UNK, dtype=np.int64)
for _i, _tok in enumerate(ALPHABET[4:31], start=4):
    _LOOKUP[ord(_tok)] = _i

TOKEN_DROPOUT_RATIO = 0.15 * 0.8  # fair-esm's mask_ratio_train
#: the fused path's rotary inside the attention kernel: off, measured slower than the separate
#: pass (H100, 2026-12-07: attention + rotary inside 0.947 ms against 0.303 + 0.412 ms; whole
#: model 102,483 against 103,475 tokens/s; benchmarks/results/esm2_fused_H100.md)
ROTARY_IN_ATTENTION = False
#: the fused path's residual adds inside out_proj's and fc2's GEMMs (TransformerLayer.forward_folded).
#: Off: H100, 2026-12-07, 105,732 against 103,795 tokens/s, but with the tanh GELU its largest pooled
#: error against FP32 is 1.077x the unfused path's (#26 allows 1.05x; with the erf GELU 0.964x);
#: benchmarks/results/esm2_fused_accuracy_H100.md
FOLD_RESIDUAL = False
#: the fused path's q and k rotated by the q|k|v projection's GEMM (a Triton GEMM with a rotary
#: epilogue, :mod:`.gemm`; FP16 on a GPU), not by a pass over its rounded output. Off: H100,
#: 2026-12-07, 104,458 against 103,552 tokens/s (+0.9%), but its largest pooled error against FP32
#: measured 1.053x the unfused path's (#26 allows 1.05x; mean 1.010x; the rotary pass 1.044x/1.012x
#: in the same run); benchmarks/results/esm2_fused_accuracy_H100.md, esm2_fold_accuracy_cpu.md
QKV_ROTARY_EPILOGUE = False


@dataclass(frozen=True)
class ESM2Config:
    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool = True
    vocab_size: int = len(ALPHABET)
    layer_norm_eps: float = 1e-5
    name: str = "esm2"

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.attention_heads

    @property
    def ffn_dim(self) -> int:
        return 4 * self.embed_dim

    def to_dict(self) -> dict:
        return asdict(self)



def tokenize(protein: str) -> np.ndarray:
    """``<cls>`` + residues + ``<eos>`` as fair-esm's batch converter (unknown letters -> <unk>)."""
    body = _LOOKUP[np.frombuffer(protein.encode("ascii"), dtype=np.uint8)]
    return np.concatenate(([CLS], body, [EOS])).astype(np.int64)


class ESM2Tokenizer:
    """fair-esm's alphabet as a tokenizer of the engine's interface."""

    pad_id = PAD

    def encode_batch(self, proteins: list[str]) -> list[np.ndarray]:
        return [tokenize(p) for p in proteins]


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim)
        self.qkv: nn.Linear | None = None  # fused [q*scaling; k; v] after fuse_qkv()

    def fuse_qkv(self) -> None:
        """One (3E, E) projection with the q scaling folded in; drops q/k/v_proj."""
        with torch.no_grad():
            w = torch.cat([self.q_proj.weight * self.scaling, self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.q_proj.bias * self.scaling, self.k_proj.bias, self.v_proj.bias])
            fused = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            fused.weight.copy_(w)
            fused.bias.copy_(b)
        self.qkv = fused
        del self.q_proj, self.k_proj, self.v_proj

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., E) -> q (scaled), k, v, each (..., H, D)."""
        shape = x.shape[:-1] + (self.num_heads, self.head_dim)
        if self.qkv is not None:
            q, k, v = self.qkv(x).split(self.num_heads * self.head_dim, dim=-1)
        else:
            q, k, v = self.q_proj(x) * self.scaling, self.k_proj(x), self.v_proj(x)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def project_rotated(self, x: torch.Tensor, rotary: Rotary, packed: bool, fused: bool = False):
        """q (scaled) and k rotated, and v; (T, H, D) packed or (B, L, H, D) padded. ``fused``
        (with QKV_ROTARY_EPILOGUE, FP16 on a GPU): rotated by the projection's GEMM (:mod:`.gemm`)."""
        if packed and type(self.qkv) is nn.Linear and fused and QKV_ROTARY_EPILOGUE:  # (not FP8's rows)
            e = self.num_heads * self.head_dim
            rope = (rotary.cos, rotary.sin, 2 * e, self.head_dim)
            if gemm.runs_fused(x, self.qkv.weight, rope):
                qkv = gemm.linear(x, self.qkv.weight, self.qkv.bias, rotary=rope)
                return qkv.view(x.shape[0], 3, self.num_heads, self.head_dim).unbind(1)
        if packed and self.qkv is not None:
            # one pass over the fused projection: q and k rotated in place (FP32 arithmetic),
            # returned with v as strided views that the attention kernels read directly
            return kernels.rotary_qk_inplace(self.qkv(x), rotary.cos, rotary.sin, self.num_heads)
        q, k, v = self.project(x)
        rotate = rotary.packed if packed else rotary.padded
        return rotate(q), rotate(k), v


class TransformerLayer(nn.Module):
    fp8_fused_activations = (("act", "fc2"),)  # precision fp8: the GELU runs in fc2's input quantisation
    fp8 = False  # its linears quantised to E4M3 (ESM2.prepare in precision fp8)

    def __init__(self, cfg: ESM2Config):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.embed_dim, cfg.attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.act = nn.GELU()  # erf GELU
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, rotary: Rotary, attend, packed: bool,
                fused: bool = False):
        """Pre-LN layer, ``(hidden, residual) -> (hidden, residual)`` as vLLM passes them.

        ``hidden`` is the previous layer's MLP output (the embeddings for the
        first layer, with ``residual`` None), not yet added to the residual
        stream: the add is fused with this layer's first LayerNorm, and this
        layer's MLP output is returned un-added for the next one (or for the
        model's final LayerNorm). So ``residual + attn(LN1(residual))`` then
        ``+ fc2(gelu(fc1(LN2(...))))``, with one pass over memory per add+norm.
        ``fused`` (ESM2.fused): GELU in fc1's epilogue (and ROTARY_IN_ATTENTION).
        """
        # precision fp8 (packed rows): the LayerNorms write E4M3 rows that the FP8 projections read
        quantize = packed and self.fp8
        ln = self.self_attn_layer_norm
        if residual is None:
            residual, h = hidden, ln(hidden)
        else:
            residual, h = self.add_norm(residual, hidden, ln, quantize)
        o = self.attention(h, rotary, attend, packed, fused)
        residual, h = self.add_norm(residual, self.self_attn.out_proj(o.flatten(-2)), self.final_layer_norm, quantize)
        return self.fc2(self.fc1_gelu(h, fused)), residual

    def forward_folded(self, residual: torch.Tensor, shift: torch.Tensor, rotary: Rotary, attend) -> torch.Tensor:
        """The fused path's packed layer with the residual adds inside the GEMMs: ``residual``
        (T, E) is updated in place by out_proj's and fc2's products (cuBLAS with beta 1: one
        rounding of residual + product, as in FP32), their biases, the same for every token, are
        carried as one FP32 row ``shift`` (the stream is ``residual + shift``) that each
        LayerNorm adds as it reads the rows. Each add+LayerNorm then reads one tensor and
        writes one, not two and two. Returns the new ``shift``."""
        attn = self.self_attn
        _, h = self.add_norm(residual, shift, self.self_attn_layer_norm, False, write_sum=False)
        o = self.attention(h, rotary, attend, True, True)
        residual.addmm_(o.flatten(-2), attn.out_proj.weight.t())
        shift = shift + attn.out_proj.bias
        _, h = self.add_norm(residual, shift, self.final_layer_norm, False, write_sum=False)
        residual.addmm_(self.fc1_gelu(h, True), self.fc2.weight.t())
        return shift + self.fc2.bias

    @staticmethod
    def add_norm(residual: torch.Tensor, y: torch.Tensor, ln: nn.LayerNorm, quantize: bool, write_sum: bool = True):
        """``residual + y`` and its LayerNorm in one pass; in E4M3 rows for the FP8 projections."""
        if quantize:
            return fp8.add_layer_norm_quantized(residual, y, ln.weight, ln.bias, ln.eps)
        return kernels.add_layer_norm(residual, y, ln.weight, ln.bias, ln.eps, write_sum=write_sum)

    def attention(self, h: torch.Tensor, rotary: Rotary, attend, packed: bool, fused: bool) -> torch.Tensor:
        """Self-attention before out_proj: fused with ROTARY_IN_ATTENTION, the attention kernel
        rotates q and k as it loads them from the q|k|v projection; else a rotary pass first."""
        attn = self.self_attn
        if (fused and ROTARY_IN_ATTENTION and packed and attn.qkv is not None
                and hasattr(attend, "rotates_inside") and attend.rotates_inside(attn.head_dim)):
            qkv = attn.qkv(h)  # q|k|v, q scaled; strided (T, H, D) views of it
            q, k, v = qkv.view(qkv.shape[0], 3, attn.num_heads, attn.head_dim).unbind(1)
            return attend(q, k, v, 1.0, rotary=rotary.by_position(attend.max_seqlen))
        q, k, v = attn.project_rotated(h, rotary, packed, fused)
        return attend(q, k, v, 1.0)  # q already scaled

    def fc1_gelu(self, h: torch.Tensor, fused: bool) -> torch.Tensor:
        """``gelu(fc1(h))``: fused (FP16/BF16 on a GPU), cuBLASLt's GELU epilogue, which is
        the tanh approximation of the erf GELU (its effect on the pooled embeddings against
        FP32: benchmarks/results/esm2_fused_accuracy_H100.md); else the erf GELU as a pass. Under FP8 the
        GELU runs in fc2's input quantisation (``act`` is then an Identity)."""
        fc1 = self.fc1
        if fused and type(fc1) is nn.Linear and h.is_cuda and h.ndim == 2 and h.dtype != torch.float32:
            return torch._addmm_activation(fc1.bias, h, fc1.weight.t(), use_gelu=True)
        return self.act(fc1(h))


class ESM2(PooledEncoder, nn.Module):
    """ESM-2 as an :class:`~virnucflow.models.interface.EmbeddingModel`."""

    name = "esm2"
    reads = "protein"
    alibi = False  # rotary positions, inside the layers
    max_token_budget = 32768
    pooling = "ESM-2: mean over residues 1..min(1024, len) (original)"
    pooling_window = ESM_POOLING
    fp8 = True
    #: the fused kernels (config ``embedding.fused``): fc1's GELU in cuBLASLt's epilogue (and the
    #: switches above); False runs the unfused reference kernels
    fused = True

    def __init__(self, cfg: ESM2Config):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = ESM2Tokenizer()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))
        self.emb_layer_norm_after = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self._inv_freqs: list[torch.Tensor] | None = None  # FP32 copies, set by prepare()

    # ------------------------------------------------------------------ set-up

    @property
    def output_dim(self) -> int:
        return self.cfg.embed_dim

    def prepare(self, device: torch.device, precision: Precision, fused: bool) -> "ESM2":
        """Inference set-up: FP32 copies of the rotary frequencies (before any cast), weights on
        ``device`` in the precision's dtype, q/k/v fused into one projection, the fused kernels or not
        (``embedding.fused``); precision fp8: the layers' linears quantised to E4M3 (:mod:`.fp8`), the
        LayerNorms before them then writing E4M3 rows."""
        self._inv_freqs = [layer.self_attn.rot_emb.inv_freq.detach().to(device, torch.float32) for layer in self.layers]
        self.to(device=device, dtype=precision.dtype)
        for layer in self.layers:
            layer.self_attn.fuse_qkv()
        self.fused = fused
        if precision.fp8:
            log.info("%s: %d linear layers quantised to FP8 E4M3", self.name, fp8.quantize_model(self, fused=fused))
            for layer in self.layers:
                layer.fp8 = True
        self.eval()
        return self

    def _rotary_tables(self, positions: torch.Tensor) -> list[Rotary]:
        """Tables per layer, computed once per batch for each distinct inv_freq (the
        published models share one across layers)."""
        freqs = self._inv_freqs or [layer.self_attn.rot_emb.inv_freq.float() for layer in self.layers]
        tables: list[tuple[torch.Tensor, Rotary]] = []
        out = []
        for f in freqs:
            f = f.to(positions.device)
            match = next((t for g, t in tables if g.shape == f.shape and torch.equal(g, f)), None)
            if match is None:
                match = Rotary(f, positions)
                tables.append((f, match))
            out.append(match)
        return out

    # ------------------------------------------------------------------ embeddings

    def _embed(self, tokens: torch.Tensor, mask_fraction: torch.Tensor | None) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        if self.cfg.token_dropout:
            x = x.masked_fill((tokens == MASK).unsqueeze(-1), 0.0)
            # fair-esm: x * (1 - 0.12) / (1 - mask ratio), one scale per sequence
            x = x * (1 - TOKEN_DROPOUT_RATIO) / (1 - mask_fraction)[..., None]
        return x

    # ------------------------------------------------------------------ forwards

    def _layers(self, x: torch.Tensor, rotaries: list[Rotary], attend, packed: bool) -> torch.Tensor:
        """The transformer stack and the final LayerNorm (fused with the last residual add)."""
        if self.folds_residual(x, packed):
            return self.layers_folded(x, rotaries, attend)
        hidden, residual = x, None
        for layer, rotary in zip(self.layers, rotaries):
            hidden, residual = layer(hidden, residual, rotary, attend, packed, self.fused)
        ln = self.emb_layer_norm_after
        return kernels.add_layer_norm(residual, hidden, ln.weight, ln.bias, ln.eps, write_sum=False)[1]

    def layers_folded(self, x: torch.Tensor, rotaries: list[Rotary], attend) -> torch.Tensor:
        """:meth:`_layers` on packed rows with :meth:`TransformerLayer.forward_folded` (``x``, the
        residual stream, is updated in place)."""
        shift = x.new_zeros(x.shape[-1], dtype=torch.float32)
        for layer, rotary in zip(self.layers, rotaries):
            shift = layer.forward_folded(x, shift, rotary, attend)
        ln = self.emb_layer_norm_after
        return kernels.add_layer_norm(x, shift, ln.weight, ln.bias, ln.eps, write_sum=False)[1]

    def folds_residual(self, x: torch.Tensor, packed: bool) -> bool:
        """Whether the layers run :meth:`TransformerLayer.forward_folded`: the fused path on packed
        FP16/BF16 rows on a GPU (precision fp8 keeps the separate adds: its products take no residual)."""
        return (FOLD_RESIDUAL and self.fused and packed and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
                and not self.layers[0].fp8)

    def forward_padded(self, batch: PaddedBatch, backend: str = "math") -> torch.Tensor:
        """(B, L) tokens -> (B, L, E) final-layer states (after emb_layer_norm_after)."""
        tokens = batch.tokens
        real = batch.mask  # (B, L)
        fraction = (tokens == MASK).sum(-1).to(self.embed_tokens.weight.dtype) / real.sum(-1)
        x = self._embed(tokens, fraction[:, None])
        x = x * real.unsqueeze(-1).type_as(x)
        attend = PaddedAttention(backend, real)
        rotaries = self._rotary_tables(torch.arange(tokens.shape[1], device=tokens.device))
        return self._layers(x, rotaries, attend, packed=False)

    def forward_packed(self, batch: PackedBatch, backend: str) -> torch.Tensor:
        """(T,) packed tokens -> (T, E) final-layer states."""
        tokens = batch.tokens
        total = batch.num_tokens
        seg = batch.segments[:total].long()
        masks = batch.segment_sum((tokens[:total] == MASK).float())  # (B,)
        fraction = (masks / batch.seqlens()).to(self.embed_tokens.weight.dtype)[seg]  # per real token
        if batch.pad_tail:
            fraction = torch.cat([fraction, fraction.new_zeros(batch.pad_tail)])
        x = self._embed(tokens, fraction)
        attend = PackedAttention(backend, batch, self.cfg.attention_heads)
        return self._layers(x, self._rotary_tables(batch.positions), attend, packed=True)

    # ------------------------------------------------------------------ sizing

    def activation_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Rough peak activation memory per packed token (for the token budget)."""
        e, f = self.cfg.embed_dim, self.cfg.ffn_dim
        itemsize = torch.finfo(dtype).bits // 8
        # residual, LN out, qkv (3E), attention out, fc1 out (F) and GELU out (F),
        # FP32 rotary/pooling temporaries.
        return itemsize * (6 * e + 2 * f) + 4 * (2 * e + 2 * self.cfg.head_dim)
