"""The embedding job of one shard: every model in turn, its vectors and its record.

:func:`embed_shard_models` runs the models of a shard in one process (one job,
one GPU); the later models' files are read ahead on a thread while the first
one computes. Per model (:func:`embed_shard`): a worker thread reads the
shard, removes duplicate sequences (identical windows or ORFs are embedded once
and their vector reused) and tokenises while the main thread loads the model;
the engine (:class:`~virnucflow.engine.Embedder`) embeds; non-finite vectors are
recomputed in FP32 and recorded, or fail the job with the IDs named (the
NaN/Inf gate; scoring checks again); the vectors go to an HDF5 file.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from virnucflow import __version__
from virnucflow.engine import EmbedOptions, EmbedStats, Embedder
from virnucflow.errors import NumericalError
from virnucflow.io.features import Embeddings, write_h5
from virnucflow.io.tables import write_tsv
from virnucflow.models.registry import load_model

if TYPE_CHECKING:
    from virnucflow.steps.shard import Shard

log = logging.getLogger("virnucflow")


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
    (:func:`virnucflow.io.features.write_embedding_info`).
    """
    kinds = list(models)
    if set(kinds) != set(outs) or set(kinds) != set(opts) or set(kinds) != set(nonfinite_outs):
        raise ValueError(f"models {kinds}, outputs {list(outs)}, options {list(opts)} and non-finite tables "
                         f"{list(nonfinite_outs)} must name the same models")
    from virnucflow.steps.shard import Shard, read_shard

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
        from virnucflow.io.features import write_embedding_info

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
    """Embed one shard (:class:`virnucflow.steps.shard.Shard`, or a shard TSV file) with the model ``kind`` of
    the manifest and write its HDF5 embedding file (the shard's sample parts in attribute ``samples``).

    The NaN/Inf gate heals: sequences whose pooled vectors are not finite (an FP16
    overflow anywhere in the network ends as Inf or NaN there) are recomputed in
    FP32 on the reference path, in this job; each is listed in ``nonfinite_out``
    (always written, header only when none). If FP32 is not finite either, the
    job fails naming them.
    """
    from virnucflow.steps.shard import Shard, read_shard

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
