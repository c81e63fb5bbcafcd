"""The embedding engine: one model over lists of token arrays, keeping the GPU busy.

:class:`Embedder` runs any :class:`~virnucflow.models.interface.EmbeddingModel`
knowing nothing else of it (the shard job that feeds it is
:mod:`virnucflow.steps.embed`):

1. the model is prepared on the device in the chosen precision and attention
   backend (:class:`EmbedOptions`);
2. the sequences are planned into token-budget batches (packed: best-fit
   decreasing; padded: length-sorted), the budget chosen from free GPU memory
   and the model unless configured;
3. a prefetch thread builds each batch as pinned CPU tensors ahead of the GPU;
   the main thread copies it asynchronously, runs the model and writes the
   pooled vectors into one device buffer: no host synchronisation until the
   end, when the buffer is copied back once and checked for NaN/Inf;
4. a batch that runs out of GPU memory is split in two and retried; a single
   sequence that does not fit is an error naming it.

"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from virnucflow.planning.config import model_options
from virnucflow.errors import ConfigError, ResourceError
from virnucflow.models.attention import resolve_backend
from virnucflow.models.interface import EmbeddingModel
from virnucflow.models.packing import make_packed, make_padded, packing_efficiency, plan_packed, plan_padded
from virnucflow.models.precision import Precision, resolve_device, resolve_precision
from virnucflow.planning.progress import Progress

log = logging.getLogger("virnucflow")

CPU_BUDGET = 4096
PREFETCH = 3


@dataclass
class EmbedOptions:
    """One model's embedding options: the config's ``embedding`` section (its defaults live
    in the schema only) resolved by :func:`model_options`, and the job's threads."""

    precision: str
    packing: bool
    attention: str
    fused: bool  # ESM-2: GELU in fc1's epilogue, FP8 quantisation with GELU once; False rolls back
    token_budget: int | str
    device: str
    dedup: bool
    fp16_on_cpu: bool
    threads: int

    @classmethod
    def defaults(cls, **overrides) -> "EmbedOptions":
        """The schema's defaults, one thread, then ``overrides`` (for the CLI, tests and benchmarks)."""
        from virnucflow.planning.config import schema_defaults

        return cls(**{**model_options(schema_defaults()["embedding"], "", environ={}), "threads": 1, **overrides})

    def reference(self) -> "EmbedOptions":
        """The FP32 reference path on the same device: padded batches, math attention."""
        return dataclasses.replace(self, precision="fp32", packing=False, attention="math", token_budget="auto",
                                   fused=False)


@dataclass
class EmbedStats:
    sequences: int = 0
    unique_sequences: int = 0
    tokens: int = 0  # tokens run through the model (unique sequences)
    tokens_if_no_dedup: int = 0
    batches: int = 0
    token_budget: int = 0
    packing_efficiency: float = 1.0
    oom_splits: int = 0
    seconds_compute: float = 0.0
    tokens_per_second: float = 0.0
    seconds_load: float = 0.0  # from reading the model file to the first batch, of which:
    seconds_read: float = 0.0  # the model file read onto the CPU (memory-mapped) and checked
    seconds_prepare: float = 0.0  # backend chosen (imports), weights moved to the device (CUDA start), fused
    seconds_warm_up: float = 0.0  # GPU kernels compiled (or loaded from the compile cache) on a dummy batch
    seconds_tokenise_wait: float = 0.0  # the main thread waiting for the tokenising thread after that

    @property
    def dedup_saving(self) -> float:
        return 1 - self.tokens / self.tokens_if_no_dedup if self.tokens_if_no_dedup else 0.0


def choose_budget(model: EmbeddingModel, device: torch.device, dtype: torch.dtype, longest: int,
                  requested: int | str = "auto") -> int:
    """Tokens per batch: configured, or what half the free GPU memory holds (capped)."""
    if requested != "auto":
        budget = int(requested)
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(0.5 * free / model.activation_bytes_per_token(dtype))
        budget = min(budget, model.max_token_budget)
    else:
        budget = CPU_BUDGET
    budget = max(budget, longest)  # a batch must hold the longest sequence
    return (budget + 127) // 128 * 128


class Embedder:
    """Runs a prepared :class:`EmbeddingModel` over lists of token arrays."""

    def __init__(self, model: EmbeddingModel, device: torch.device, precision: Precision,
                 packed: bool, backend: str, token_budget: int | str = "auto"):
        self.model, self.device, self.precision = model, device, precision
        self.packed, self.backend, self.pad_id = packed, backend, model.tokenizer.pad_id
        self.token_budget = token_budget
        self.pin = device.type == "cuda"

    @classmethod
    def create(cls, model: EmbeddingModel, opts: EmbedOptions) -> "Embedder":
        device = resolve_device(opts.device)
        precision = resolve_precision(opts.precision, device, fp16_on_cpu=opts.fp16_on_cpu)
        if precision.name == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, also on Ampere and later
        if device.type == "cpu" and opts.threads:
            torch.set_num_threads(max(1, int(opts.threads)))
        backend = resolve_backend(opts.attention, device, precision.dtype, alibi=model.alibi, packed=opts.packing)
        if precision.fp8 and not model.fp8:
            raise ConfigError(f"precision fp8 is not offered for {model.name}: give it per model, e.g. "
                              "embedding: {esm2: {precision: fp8}}")
        model.prepare(device, precision, opts.fused)
        return cls(model, device, precision, opts.packing, backend, opts.token_budget)

    def warm_up(self) -> None:
        """Compile the GPU kernels before the real batches, while the shard is still being tokenised.

        FlexAttention compiles per batch shape: one dummy batch of the job's packed length.
        The Triton kernels (attention, rotary, GEGLU, add+LayerNorm) compile on first use or
        load from the compile cache: one small dummy batch.
        """
        if not (self.packed and self.device.type == "cuda"):
            return
        if self.backend == "flex":
            budget = choose_budget(self.model, self.device, self.precision.dtype, 1, self.token_budget)
        else:
            budget = 4 * 120
        dummy = [np.full(120, self.pad_id, dtype=np.int64)] * max(1, budget // 120)
        self._run(make_packed(dummy, np.arange(len(dummy)), pad_to=budget, filler=self.pad_id))
        torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ batches

    def _build(self, tokens: Sequence[np.ndarray], items: np.ndarray, pad_to: int | None):
        if self.packed:
            return make_packed(tokens, items, pad_to=pad_to, filler=self.pad_id, pin=self.pin)
        return make_padded(tokens, items, self.pad_id, pin=self.pin)

    def _plan(self, tokens: Sequence[np.ndarray]):
        """Lengths, token budget, batches (arrays of item indices) and the packed length
        every batch is padded to (or None) for a non-empty list of token arrays."""
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        budget = choose_budget(self.model, self.device, self.precision.dtype, int(lengths.max()), self.token_budget)
        plan = (plan_packed if self.packed else plan_padded)(lengths, budget)
        # FlexAttention compiles per shape: give every packed batch the budget's length.
        pad_to = budget if (self.packed and self.backend == "flex") else None
        return lengths, budget, plan, pad_to

    @torch.inference_mode()
    def _run(self, batch) -> torch.Tensor:
        return self.model.embed(batch.to(self.device), self.backend)

    def embed_tokens(self, tokens: Sequence[np.ndarray], stats: EmbedStats | None = None,
                     progress_label: str | None = None) -> np.ndarray:
        """(N, D) float32 pooled vectors of token arrays (no deduplication here); with
        ``progress_label``, a progress line at most every 30 s (``virnucflow.planning.progress``)."""
        stats = stats or EmbedStats()
        dim = self.model.output_dim
        if len(tokens) == 0:
            return np.zeros((0, dim), np.float32)
        lengths, budget, plan, pad_to = self._plan(tokens)
        stats.token_budget, stats.batches = budget, len(plan)
        stats.packing_efficiency = packing_efficiency(lengths, plan, budget, padded=not self.packed)
        stats.tokens = int(lengths.sum())
        out = torch.empty((len(tokens), dim), dtype=torch.float32, device=self.device)
        progress = (Progress(self.model.name, progress_label, len(tokens), stats.tokens, self.device)
                    if progress_label is not None else None)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
            pending = [pool.submit(self._build, tokens, b, pad_to) for b in plan[:PREFETCH]]
            for k in range(len(plan)):
                batch = pending[k].result()
                if k + PREFETCH < len(plan):
                    pending.append(pool.submit(self._build, tokens, plan[k + PREFETCH], pad_to))
                pending[k] = None  # drop the reference once consumed
                self._embed_into(out, batch, tokens, pad_to, stats)
                if progress is not None:
                    progress.batch_queued(len(plan[k]), int(lengths[plan[k]].sum()))
        vectors = out.cpu().numpy()  # the one device-to-host copy (synchronises)
        stats.seconds_compute = time.perf_counter() - t0
        stats.tokens_per_second = stats.tokens / stats.seconds_compute if stats.seconds_compute else 0.0
        return vectors

    @torch.inference_mode()
    def token_states(self, tokens: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per sequence, its (L, E) last-layer states as float32 on the device, in the batches
        this embedder would use (for comparisons; no OOM splitting)."""
        if len(tokens) == 0:
            return []
        lengths, _, plan, pad_to = self._plan(tokens)
        out: list[torch.Tensor | None] = [None] * len(tokens)
        for items in plan:
            batch = self._build(tokens, items, pad_to).to(self.device)
            states = self.model.hidden_states(batch, self.backend).float()
            cu = batch.cu_seqlens.tolist() if self.packed else None
            for row, item in enumerate(items):
                n = int(lengths[item])
                if self.packed:
                    start = cu[row]
                    out[int(item)] = states[start:start + n]
                else:
                    out[int(item)] = states[row, :n]
        return out  # type: ignore[return-value]

    def _embed_into(self, out: torch.Tensor, batch, tokens, pad_to, stats: EmbedStats) -> None:
        items = torch.as_tensor(batch.items)
        try:
            pooled = self._run(batch)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch.items) == 1:
                n = int(len(tokens[int(batch.items[0])]))
                raise ResourceError(f"out of GPU memory embedding one sequence of {n} tokens with {self.model.name}; "
                                    "use a GPU with more memory or a shorter chunk_length") from None
            stats.oom_splits += 1
            half = len(batch.items) // 2
            log.warning("out of GPU memory on a batch of %d sequences: splitting it", len(batch.items))
            for part in (batch.items[:half], batch.items[half:]):
                self._embed_into(out, self._build(tokens, part, pad_to), tokens, pad_to, stats)
            return
        out.index_copy_(0, items.to(self.device, non_blocking=True), pooled)
