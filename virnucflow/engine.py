"""The embedding engine: the models over a shard's sequences, keeping the GPU busy.

One job per shard runs every model in turn (:func:`embed_shard_models`); the
later models' files are read ahead on a thread while the first one computes.
Per model:

1. a worker thread reads the shard, removes duplicate sequences (identical
   windows or ORFs are embedded once and their vector reused) and tokenises,
   while the main thread loads the model onto the device;
2. the sequences are planned into token-budget batches (packed: best-fit
   decreasing; padded: length-sorted), the budget chosen from free GPU memory
   and the model unless configured;
3. a prefetch thread builds each batch as pinned CPU tensors ahead of the GPU;
   the main thread copies it asynchronously, runs the model and writes the
   pooled vectors into one device buffer: no host synchronisation until the
   end, when the buffer is copied back once and checked for NaN/Inf;
4. a batch that runs out of GPU memory is split in two and retried; a single
   sequence that does not fit is an error naming it.

Non-finite vectors fail the job with the IDs named (the NaN/Inf gate); the
merge step checks again.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .config import model_options
from .errors import ConfigError, NumericalError, ResourceError
from .features import Embeddings, write_h5
from .tables import write_tsv
from .models.attention import resolve_backend
from .models.interface import EmbeddingModel, load_model
from .models.packing import make_packed, make_padded, packing_efficiency, plan_packed, plan_padded
from .models.precision import Precision, resolve_device, resolve_precision
from .progress import Progress

if TYPE_CHECKING:
    from .shard import Shard

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
        from .config import schema_defaults

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
        model.prepare(device, precision.dtype)
        if hasattr(model, "fused"):  # ESM-2: the fused kernels or the unfused reference ones
            model.fused = bool(opts.fused)
        if precision.fp8:
            from .models.fp8 import quantize_model

            if not model.fp8:
                raise ConfigError(f"precision fp8 is not offered for {model.name}: give it per model, e.g. "
                                  "embedding: {esm2: {precision: fp8}}")

            log.info("%s: %d linear layers quantised to FP8 E4M3", model.name, quantize_model(model, one_pass=opts.fused))
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
        ``progress_label``, a progress line at most every 30 s (``virnucflow.progress``)."""
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


def dedup(seqs: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique sequences (first-seen order) and, per input, the index of its unique copy."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(s, len(first)) for s in seqs), dtype=np.int64, count=len(seqs))
    return list(first), inverse


# --------------------------------------------------------------------------- the job


NONFINITE_COLUMNS = ["id", "length", "nonfinite", "precision", "recomputed_precision", "finite_after_recompute"]


def embed_shard_models(models: Mapping[str, str | os.PathLike], shard: Shard | str | os.PathLike,
                       outs: Mapping[str, str | os.PathLike], opts: Mapping[str, EmbedOptions],
                       nonfinite_outs: Mapping[str, str | os.PathLike],
                       info_out: str | os.PathLike | None = None) -> dict[str, EmbedStats]:
    """Embed one shard with every model of ``models`` (kind -> its manifest) in turn, in this process.

    One job per shard instead of one per shard and model: Python, CUDA and the
    shard are set up once. The later models' files are read ahead on a thread
    (into the page cache: a 5.7 GB ESM-2 checkpoint on a cluster's network file
    system) while the first model computes; each model's GPU copy is freed
    before the next one moves in. Outputs are those of :func:`embed_shard`, per
    model, bit for bit, and ``info_out``: the shard's record of them
    (:func:`virnucflow.features.write_embedding_info`).
    """
    kinds = list(models)
    if set(kinds) != set(outs) or set(kinds) != set(opts) or set(kinds) != set(nonfinite_outs):
        raise ValueError(f"models {kinds}, outputs {list(outs)}, options {list(opts)} and non-finite tables "
                         f"{list(nonfinite_outs)} must name the same models")
    from .shard import Shard, read_shard

    shard = shard if isinstance(shard, Shard) else read_shard(shard)  # read once for every model
    t0 = time.perf_counter()
    later = [json.loads(Path(models[k]).read_text())[k]["path"] for k in kinds[1:]]
    threading.Thread(target=read_ahead, args=(later,), name="read-ahead", daemon=True).start()
    stats: dict[str, EmbedStats] = {}
    for kind in kinds:
        stats[kind] = embed_shard(kind, models[kind], shard, outs[kind], opts[kind], nonfinite_out=nonfinite_outs[kind])
        if torch.cuda.is_available():
            gc.collect()
            torch.cuda.empty_cache()  # this model's weights and buffers are gone: room for the next one
    if info_out is not None:
        from .features import write_embedding_info

        write_embedding_info(dict(outs), info_out)
    # The job's benchmark file minus this is its start-up (Python, imports) and exit.
    log.info("%s: every model's outputs written %.1f s after the first model began (%s)", shard.label,
             time.perf_counter() - t0, ", ".join(f"{k} {v.seconds_load + v.seconds_compute:.1f} s" for k, v in stats.items()))
    return stats


def read_ahead(paths: Sequence[str | os.PathLike], chunk: int = 1 << 23) -> int:
    """Read every file of ``paths`` (files or model directories) once, discarding the bytes, so that
    loading them later finds them in the page cache; returns the bytes read. Unreadable files are
    skipped: loading the model reports them."""
    done, buf = 0, bytearray(chunk)
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else []
        for f in files:
            try:
                with open(f, "rb", buffering=0) as fh:
                    while n := fh.readinto(buf):
                        done += n
            except OSError:
                continue
    return done


def embed_shard(kind: str, models_json: str | os.PathLike, shard: Shard | str | os.PathLike,
                out: str | os.PathLike, opts: EmbedOptions, nonfinite_out: str | os.PathLike | None = None) -> EmbedStats:
    """Embed one shard (:class:`virnucflow.shard.Shard`, or a shard TSV file) with the model ``kind`` of
    the manifest and write its HDF5 embedding file (the shard's sample parts in attribute ``samples``).

    The NaN/Inf gate heals: sequences whose pooled vectors are not finite (an FP16
    overflow anywhere in the network ends as Inf or NaN there) are recomputed in
    FP32 on the reference path, in this job; each is listed in ``nonfinite_out``
    (always written, header only when none). If FP32 is not finite either, the
    job fails naming them.
    """
    from .shard import Shard, read_shard

    manifest = json.loads(Path(models_json).read_text())
    entry = manifest[kind]
    if not isinstance(shard, Shard):
        shard = read_shard(shard)
    index, ids, nts, aas = shard.index, shard.ids, shard.nucleotides, shard.proteins
    attrs = {
        "model_kind": kind, "model_spec": entry["spec"], "model_path": entry["path"],
        "model_description": entry["description"], "model_config": entry.get("config", {}),
        "demo_model": bool(entry.get("demo", False)), "workflow_version": __version__,
        "torch_version": torch.__version__,
    }
    if shard.samples:
        attrs["samples"] = [list(part) for part in shard.samples]
    stats = EmbedStats(sequences=len(ids))
    if not ids:
        log.info("%s: empty shard, nothing to embed", shard.label)
        write_h5(out, Embeddings([], index, np.zeros((0, entry["dim"]), np.float32),
                                 {**attrs, "precision": opts.precision, "attention": opts.attention}))
        if nonfinite_out:
            write_tsv(nonfinite_out, pd.DataFrame(columns=NONFINITE_COLUMNS))
        return stats

    # Read/deduplicate/tokenise in a thread while the model moves to the device.
    t0 = time.perf_counter()
    model, _ = load_model(kind, entry["path"])
    t_read = time.perf_counter()
    seqs = nts if model.reads == "nucleotide" else aas
    prepared: dict = {}

    def tokenise() -> None:
        unique, inverse = dedup(seqs) if opts.dedup else (list(seqs), np.arange(len(seqs)))
        prepared.update(unique=unique, inverse=inverse, tokens=model.tokenizer.encode_batch(unique))

    worker = threading.Thread(target=tokenise, name="tokenise")
    worker.start()
    embedder = Embedder.create(model, opts)
    t_prepare = time.perf_counter()
    embedder.warm_up()
    t_warm = time.perf_counter()
    worker.join()
    stats.seconds_load = time.perf_counter() - t0
    stats.seconds_read, stats.seconds_prepare = t_read - t0, t_prepare - t_read
    stats.seconds_warm_up, stats.seconds_tokenise_wait = t_warm - t_prepare, stats.seconds_load - (t_warm - t0)
    tokens, inverse = prepared["tokens"], prepared["inverse"]
    stats.unique_sequences = len(tokens)
    stats.tokens_if_no_dedup = int(sum(len(tokens[i]) for i in inverse))
    unique_vectors = embedder.embed_tokens(tokens, stats, progress_label=shard.label)
    bad = np.flatnonzero(~np.isfinite(unique_vectors).all(axis=1))
    records = pd.DataFrame(columns=NONFINITE_COLUMNS)
    if len(bad):
        records = _heal(kind, entry["path"], embedder, opts, tokens, unique_vectors, bad, inverse, ids, seqs, shard.label)
    vectors = unique_vectors[inverse]
    attrs.update(
        precision=embedder.precision.name, precision_requested=embedder.precision.requested,
        attention=embedder.backend, packing=embedder.packed, device=_device_name(embedder.device),
        pooling=model.pooling, stats={**asdict(stats), "dedup_saving": stats.dedup_saving},
        recomputed_fp32=len(records),
    )
    if nonfinite_out:
        write_tsv(nonfinite_out, records)
    write_h5(out, Embeddings(ids, index, vectors, attrs))
    log.info(
        "%s %s: %d sequences (%d unique, dedup saved %.1f%% of tokens), %d tokens in %d batches "
        "(budget %d, packing efficiency %.1f%%), %s/%s/%s on %s: load %.1f s (read %.1f, prepare %.1f, warm-up %.1f, "
        "tokenising %.1f more), compute %.1f s, %.0f tokens/s",
        kind, shard.label, stats.sequences, stats.unique_sequences, 100 * stats.dedup_saving, stats.tokens,
        stats.batches, stats.token_budget, 100 * stats.packing_efficiency, embedder.precision.name,
        "packed" if embedder.packed else "padded", embedder.backend, _device_name(embedder.device),
        stats.seconds_load, stats.seconds_read, stats.seconds_prepare, stats.seconds_warm_up,
        stats.seconds_tokenise_wait, stats.seconds_compute, stats.tokens_per_second,
    )
    return stats


def _heal(kind: str, path: str, embedder: Embedder, opts: EmbedOptions, tokens: list[np.ndarray],
          vectors: np.ndarray, bad: np.ndarray, inverse: np.ndarray, ids: list[str], seqs: list[str],
          shard: str) -> pd.DataFrame:
    """Recompute the unique sequences ``bad`` in FP32 on the reference path; fill ``vectors`` in place."""
    what = {int(u): "+".join(w for w, f in (("nan", np.isnan), ("inf", np.isinf)) if f(vectors[u]).any()) for u in bad}
    log.warning("%s: %d %s vectors not finite in %s (%s): recomputing them in fp32 on the reference path",
                shard, len(bad), kind, embedder.precision.name, ", ".join(sorted(set(what.values()))))
    precision, device = embedder.precision.name, embedder.device
    del embedder  # the production copy of the weights is no longer needed: make room for the FP32 one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reference_model, _ = load_model(kind, path)  # from the file again: exact FP32 weights, not upcast FP16
    reference = Embedder.create(reference_model, dataclasses.replace(opts.reference(), device=str(device)))
    fixed = reference.embed_tokens([tokens[u] for u in bad])
    vectors[bad] = fixed
    finite = np.isfinite(fixed).all(axis=1)
    rows = [
        {"id": ids[i], "length": len(seqs[i]), "nonfinite": what[int(inverse[i])], "precision": precision,
         "recomputed_precision": "fp32", "finite_after_recompute": "yes" if finite[k] else "no"}
        for k, u in enumerate(bad) for i in np.flatnonzero(inverse == u)
    ]
    still = [r["id"] for r in rows if r["finite_after_recompute"] == "no"]
    if still:
        raise NumericalError(
            f"{shard}: {len(still)} {kind} embeddings are not finite in fp32 either "
            f"(first: {', '.join(still[:10])}); these sequences cannot be embedded by this model"
        )
    log.info("%s: %d %s vectors recomputed in fp32, all finite", shard, len(rows), kind)
    return pd.DataFrame(rows, columns=NONFINITE_COLUMNS)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
