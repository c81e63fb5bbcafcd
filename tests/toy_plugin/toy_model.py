"""A third embedding model for the tests: one module (this file) and one registration (the entry point
``toy = toy_model:SPEC`` in ``virnucflow_toy-0.1.dist-info/entry_points.txt``).

``toy`` embeds each nucleotide of a frame's window through a 6 x 3 table and mean-pools: 3 more
features per frame, after DNABERT-S's and ESM-2's. Its file is a torch ``.pt`` of the table, or of
``{"table": ..., "packed_offset": x}``: a model whose packed path moves every state by ``(x, -x, 0)`` (a
packing bug that ``fp32_compare``, which checks the packed production path against the padded FP32
reference, must catch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from virnucflow.models.packing import PackedBatch, PaddedBatch
from virnucflow.models.registry import ModelSpec

TOKENS = {c: 2 + k for k, c in enumerate("ACGT")}  # 0 padding, 1 ends and other letters


class ToyTokenizer:
    pad_id = 0

    def encode_batch(self, seqs):
        return [np.array([1] + [TOKENS.get(c, 1) for c in s] + [1], dtype=np.int64) for s in seqs]


class ToyCounter(nn.Module):
    """Embeds each nucleotide token, mean-pools over all tokens."""

    name = "toy"
    reads = "nucleotide"
    alibi = False
    max_token_budget = 1024
    pooling = "toy: mean over all tokens"
    fp8 = False

    def __init__(self, table: torch.Tensor | None = None, packed_offset: float = 0.0):
        super().__init__()
        self.packed_offset = packed_offset
        self.table = nn.Embedding(6, 3)
        with torch.no_grad():
            self.table.weight.copy_(torch.arange(18, dtype=torch.float32).view(6, 3) if table is None else table)
        self.tokenizer = ToyTokenizer()

    @property
    def output_dim(self) -> int:
        return 3

    def prepare(self, device, precision, fused):
        return self.to(device=device, dtype=precision.dtype).eval()

    def hidden_states(self, batch, backend):
        """(T, 3) packed or (B, L, 3) padded token states."""
        if isinstance(batch, PackedBatch):
            return self.table(batch.tokens).float() + self.packed_offset * torch.tensor([1.0, -1.0, 0.0])
        assert isinstance(batch, PaddedBatch)
        return self.table(batch.tokens).float()

    def embed(self, batch, backend):
        states = self.hidden_states(batch, backend)
        if isinstance(batch, PackedBatch):
            total = batch.num_tokens
            return batch.segment_sum(states[:total]) / batch.seqlens()[:, None].float()
        mask = batch.mask.unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1)

    def activation_bytes_per_token(self, dtype):
        return 64


def _read(path) -> dict:
    obj = torch.load(path, weights_only=True)
    return obj if isinstance(obj, dict) else {"table": obj}


def load(path: str):
    obj = _read(path)
    return ToyCounter(obj["table"], float(obj.get("packed_offset", 0.0))), {"format": "toy table", "demo_model": True}


def describe(path) -> dict:
    table = _read(path)["table"]
    return {"dim": int(table.shape[1]), "demo": True, "format": "toy table", "description": "toy 6 x 3 table"}


def build_demo(path, seed: int = 0) -> int:
    torch.save(torch.arange(18, dtype=torch.float32).view(6, 3) / 18, path)
    return 3


SPEC = ModelSpec(
    name="toy", label="Toy", reads="nucleotide", loader="toy_model:load", describe="toy_model:describe",
    tokens=lambda n: n + 2, tokens_per_second=1_000_000, start_seconds=1,
    demo="resources/demo_models/toy_demo.pt", demo_builder="toy_model:build_demo",
)
