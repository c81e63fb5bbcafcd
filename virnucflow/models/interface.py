"""The one interface the embedding engine uses, whatever the model.

An embedding model (ESM-2, DNABERT-S, or a model added later) is a
``torch.nn.Module`` that also says what it reads, how it tokenises, what its
attention needs and how it pools; the engine (``virnucflow.engine``) batches,
places and runs it knowing nothing else. A loader turns a model path into a
ready model with its tokenizer attached. Adding a model is writing one module
with a class that satisfies :class:`EmbeddingModel` and a loader, then
registering it (:mod:`virnucflow.models.registry`).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .packing import PackedBatch, PaddedBatch
from .precision import Precision


@runtime_checkable
class Tokenizer(Protocol):
    pad_id: int

    def encode_batch(self, seqs: list[str]) -> list[np.ndarray]:
        """One int64 token array per sequence, special tokens included."""
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    name: str  # config and manifest key (models.<name>), e.g. "esm2"
    reads: Literal["protein", "nucleotide"]  # which sequence of a frame it embeds
    alibi: bool  # attention adds ALiBi biases (only backends that support them can run it)
    max_token_budget: int  # cap of automatic token budgets: larger batches only cost memory
    pooling: str  # how token states become one vector, for the output files
    fp8: bool  # precision fp8 is offered (its linear layers quantise to E4M3 within fp32_compare's thresholds)
    tokenizer: Tokenizer

    @property
    def output_dim(self) -> int: ...

    def prepare(self, device: torch.device, precision: Precision, fused: bool) -> "EmbeddingModel":
        """Inference set-up: weights on ``device`` in ``precision.dtype``, eval mode, fused layouts;
        ``fused``: the model's fused kernels or its unfused reference ones (``embedding.fused``); with
        ``precision.fp8`` (offered where ``fp8`` is True) the model quantises its own linear layers."""
        ...

    def embed(self, batch: PackedBatch | PaddedBatch, backend: str) -> torch.Tensor:
        """Pooled (B, output_dim) float32 vectors of a batch."""
        ...

    def hidden_states(self, batch: PackedBatch | PaddedBatch, backend: str) -> torch.Tensor:
        """Last-layer token states, (T, E) packed or (B, L, E) padded (for ``fp32_compare``)."""
        ...

    def activation_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Rough peak activation memory per token, for token budgets from free memory."""
        ...
