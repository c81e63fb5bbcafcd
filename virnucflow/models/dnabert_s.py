"""DNABERT-S (Zhou et al. 2024): the DNABERT-2 / MosaicBERT encoder, in plain PyTorch.

Computes what the model's Hugging Face remote code (``bert_layers.py``,
PyTorch attention path) computes, without ``trust_remote_code`` or Triton:

- embeddings: ``LayerNorm(word + token_type[0])`` (no position embeddings);
- per layer, post-LN: ``x = LN(x + dense(attn(Wqkv(x))))`` then
  ``x = LN(x + wo(gelu(h[:, :I]) * h[:, I:]))`` with ``h = gated_layers(x)``
  (GEGLU, the first half is the gate, erf GELU, no bias on ``gated_layers``);
- attention: fused ``Wqkv`` laid out ``(t h d)``, scores ``q.k / sqrt(d)`` plus
  the symmetric ALiBi bias ``-slope[h] * |i - j|`` with DNABERT-2's slope
  order (see ``attention.alibi_slopes``);
- no final LayerNorm; the output is the last layer. ``pooler.dense`` is loaded
  (it is in the checkpoint) but the original VirNucPro does not use it.

Modules are named by role (``embed_tokens``, ``layers.N.attn.qkv``, ``layers.N.mlp.gated``,
...); :data:`CHECKPOINT_NAMES` maps the checkpoint's names (``embeddings.*``,
``encoder.layer.N.attention.self.Wqkv``, ..., ``pooler.dense``) to them at load
time, and the published state dict loads strictly. Tokenisation uses the model's own
``tokenizer.json`` through the ``tokenizers`` library (BPE, ``[CLS] $A
[SEP]``). Pooling is the original VirNucPro's: mean over every token, [CLS] and
[SEP] included.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import kernels
from .attention import PackedAttention, PaddedAttention, alibi_slopes
from .packing import PackedBatch, PaddedBatch
from .pooling import DNABERT_POOLING, PooledEncoder
from .precision import Precision


@dataclass(frozen=True)
class DNABERTSConfig:
    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    name: str = "DNABERT-S"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, cfg: dict, name: str = "DNABERT-S") -> "DNABERTSConfig":
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [k for k in keys if k not in cfg]
        if missing:
            raise KeyError(", ".join(missing))
        return cls(
            **{k: int(cfg[k]) for k in keys},
            type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(cfg.get("pad_token_id", 0) or 0),
            name=name,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class DNABERTSTokenizer:
    """DNABERT-S's BPE tokenizer from ``tokenizer.json`` (adds [CLS] ... [SEP]).

    The published file stores fixed padding and truncation to 2000 tokens;
    Hugging Face switches both off for a plain ``tokenizer(seq)`` call, and so
    do we, so long windows are neither cut nor padded.
    """

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as _Tokenizer

        self.path = Path(path)
        self._tok = _Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = self._tok.token_to_id("[PAD]")
        self.pad_id = 0 if self.pad_id is None else self.pad_id

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, seq: str) -> np.ndarray:
        return np.asarray(self._tok.encode(seq).ids, dtype=np.int64)

    def encode_batch(self, seqs: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(seqs)]


# Checkpoint (Hugging Face BertModel of DNABERT-2/-S) name -> our module name, per parameter prefix.
CHECKPOINT_NAMES = [
    ("embeddings.word_embeddings.", "embed_tokens.word."),
    ("embeddings.token_type_embeddings.", "embed_tokens.token_type."),
    ("embeddings.LayerNorm.", "embed_tokens.norm."),
    ("encoder.layer.{n}.attention.self.Wqkv.", "layers.{n}.attn.qkv."),
    ("encoder.layer.{n}.attention.output.dense.", "layers.{n}.attn.out."),
    ("encoder.layer.{n}.attention.output.LayerNorm.", "layers.{n}.attn_norm."),
    ("encoder.layer.{n}.mlp.gated_layers.", "layers.{n}.mlp.gated."),
    ("encoder.layer.{n}.mlp.wo.", "layers.{n}.mlp.down."),
    ("encoder.layer.{n}.mlp.layernorm.", "layers.{n}.mlp_norm."),
    ("pooler.dense.", "pooler."),
]


class TokenEmbeddings(nn.Module):
    """``LayerNorm(word + token_type[0])``: no position embeddings (ALiBi in attention)."""

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.word(tokens) + self.token_type.weight[0])


class SelfAttention(nn.Module):
    """Fused ``qkv`` projection laid out (t h d); ``attend`` applies the ALiBi bias."""

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, attend) -> torch.Tensor:
        q, k, v = self.qkv(x).view(x.shape[:-1] + (3, self.num_heads, self.head_dim)).unbind(-3)
        return self.out(attend(q, k, v, 1.0 / math.sqrt(self.head_dim)).flatten(-2))


class GEGLU(nn.Module):
    """``down(gelu(gate) * value)`` with ``gate | value = gated(x)`` (erf GELU, no bias on ``gated``)."""

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        self.gated = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(kernels.geglu(self.gated(x)))


class Layer(nn.Module):
    """Post-LN: ``x = LN(x + attn(x))``, then ``x = LN(x + mlp(x))``; each add fused with its LayerNorm."""

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = GEGLU(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attend) -> torch.Tensor:
        """x (..., E); ``attend(q, k, v, scale)`` over (..., H, D)."""
        x = _add_norm(x, self.attn(x, attend), self.attn_norm)
        return _add_norm(x, self.mlp(x), self.mlp_norm)


def _add_norm(x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return kernels.add_layer_norm(x, y, norm.weight, norm.bias, norm.eps, write_sum=False)[1]


class DNABERTS(PooledEncoder, nn.Module):
    """DNABERT-S as an :class:`~virnucflow.models.interface.EmbeddingModel`."""

    name = "dnabert_s"
    reads = "nucleotide"
    alibi = True
    max_token_budget = 65536
    pooling = "DNABERT-S: mean over all tokens incl. [CLS]/[SEP] (original)"
    pooling_window = DNABERT_POOLING
    # not in FP8: on full-size random weights its pooled vectors fell to cosine 0.905 against
    # FP32 (post-LN and GEGLU amplify E4M3 rounding), and it is ~3% of the GPU time anyway
    fp8 = False

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = TokenEmbeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # in the checkpoint; unused for embeddings
        self.tokenizer: DNABERTSTokenizer | None = None  # attached by the loader
        self._slopes: torch.Tensor | None = None

    def slopes(self, device: torch.device) -> torch.Tensor:
        """(H,) FP32 ALiBi slopes (not a buffer: never cast to the model's dtype)."""
        if self._slopes is None or self._slopes.device != device:
            self._slopes = torch.tensor(alibi_slopes(self.cfg.num_attention_heads), dtype=torch.float32, device=device)
        return self._slopes

    @property
    def output_dim(self) -> int:
        return self.cfg.hidden_size

    def prepare(self, device: torch.device, precision: Precision, fused: bool) -> "DNABERTS":
        """Inference set-up: weights on ``device`` in the precision's dtype (no FP8: ``fp8`` is False; no
        kernel choice: ``fused`` changes nothing here)."""
        self.to(device=device, dtype=precision.dtype)
        self.eval()
        return self

    def _forward(self, tokens: torch.Tensor, attend) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, attend)
        return x

    def forward_padded(self, batch: PaddedBatch, backend: str = "math") -> torch.Tensor:
        """(B, L) tokens -> (B, L, E) last-layer states (pad rows are garbage)."""
        slopes = self.slopes(batch.tokens.device)
        return self._forward(batch.tokens, PaddedAttention(backend, batch.mask, alibi=slopes))

    def forward_packed(self, batch: PackedBatch, backend: str) -> torch.Tensor:
        """(T,) packed tokens -> (T, E)."""
        slopes = self.slopes(batch.tokens.device)
        return self._forward(batch.tokens, PackedAttention(backend, batch, self.cfg.num_attention_heads, alibi=slopes))

    def activation_bytes_per_token(self, dtype: torch.dtype) -> int:
        e, i = self.cfg.hidden_size, self.cfg.intermediate_size
        itemsize = torch.finfo(dtype).bits // 8
        # residual, qkv (3E), attention out, gated (2I), GEGLU (I), FP32 pooling.
        return itemsize * (6 * e + 4 * i) + 4 * e
