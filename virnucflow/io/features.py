"""Embedding and feature files (HDF5), the merge step, and the original's formats.

Per shard and model the embedding step writes an HDF5 file with

- ``ids``        (N,) UTF-8 strings: frame IDs (``{record}_chunk_{k}F1`` ...)
- ``index``      (N,) int64: each frame's position in the sample's identified files
- ``embeddings`` (N, D) float32: pooled vectors

and attributes naming the model, precision, attention backend and packing.
:func:`read_features` joins the DNABERT-S and ESM-2 files of a sample by ID
into the classifier's features ((N, D_nt + D_aa) float32, nucleotide first as
in the original, rows in input order) and refuses any mismatch; the predict
step scores them in memory. :func:`merge_features` writes the same table to
``features.h5`` (``output.features``, or ``output.merged_pt`` which is made
from it).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from virnucflow import __version__
from virnucflow.io.atomic import atomic_outputs
from virnucflow.errors import InputError, MergeError, NumericalError, short

log = logging.getLogger("virnucflow")
#: Embedding settings that must be the same across a model's shards (recorded by the engine).
SETTINGS = ("precision", "attention", "packing")
_STR = h5py.string_dtype("utf-8")
_MAX_LISTED = 10
_BLOCK_ROWS = 8192  # rows per block when features are gathered or checked


@dataclass
class Embeddings:
    """Vectors of a set of frames: one model's pooled embeddings, or the merged features."""

    ids: list[str]
    index: np.ndarray  # (N,) int64
    vectors: np.ndarray  # (N, D) float32
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "none"
    if isinstance(value, str):
        return str(value)  # plain str: h5py cannot store str subclasses such as torch's version string
    return value


def write_h5(path: str | os.PathLike, table: Embeddings, dataset: str = "embeddings") -> None:
    """Write ``table`` to an HDF5 file atomically."""
    n = len(table.ids)
    if table.vectors.ndim != 2 or table.vectors.shape[0] != n or table.index.shape != (n,):
        raise ValueError(
            f"inconsistent table: {n} ids, index {table.index.shape}, vectors {table.vectors.shape}"
        )
    with atomic_outputs([path]) as (tmp,):
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("ids", data=np.array(table.ids, dtype=object), dtype=_STR)
            h5.create_dataset("index", data=table.index.astype(np.int64))
            h5.create_dataset(dataset, data=table.vectors.astype(np.float32, copy=False))
            for key, value in table.attrs.items():
                h5.attrs[key] = _encode_attr(value)
            h5.attrs.setdefault("workflow_version", __version__)


def read_h5(path: str | os.PathLike, dataset: str = "embeddings", mmap: bool = False) -> Embeddings:
    """Read an embedding (or feature) file written by :func:`write_h5`.

    ``mmap``: map the vectors read-only from the file instead of reading them
    into new memory (the file's pages are used where they are, in the page
    cache: no copy, no freshly zeroed gigabytes), where the dataset is stored
    contiguously and uncompressed, as :func:`write_h5` stores it.
    """
    p = Path(path)
    try:
        with h5py.File(p, "r") as h5:
            ids = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in h5["ids"][()]]
            index = np.asarray(h5["index"][()], dtype=np.int64)
            vectors = _mapped(p, h5[dataset]) if mmap else None
            if vectors is None:
                vectors = np.asarray(h5[dataset][()], dtype=np.float32)
            attrs = _attrs(h5)
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except (OSError, KeyError) as exc:
        raise InputError(f"{p}: truncated, damaged or not a VirNucFlow {dataset} file ({short(exc, 200)}); "
                         "delete it and rerun") from None
    if vectors.ndim != 2:
        vectors = vectors.reshape(len(ids), -1)
    return Embeddings(ids, index, vectors, attrs)


def _attrs(h5: h5py.File) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}


def _mapped(path: Path, dset: h5py.Dataset) -> np.ndarray | None:
    """The dataset memory-mapped from ``path``, or None where its layout does not allow it."""
    offset = dset.id.get_offset()  # None unless contiguous and allocated
    if offset is None or dset.chunks is not None or dset.compression is not None or dset.dtype != np.float32 or dset.size == 0:
        return None
    return np.memmap(path, dtype=dset.dtype, mode="r", offset=offset, shape=dset.shape)


def sample_rows(table: Embeddings, sample: str) -> Embeddings:
    """The rows of one sample of a batch's shard (its parts in attribute ``samples``)."""
    parts = table.attrs.get("samples")
    parts = json.loads(parts) if isinstance(parts, str) else parts
    if not parts:
        return table
    start = 0
    for name, n in parts:
        if name == sample:
            return Embeddings(table.ids[start:start + n], table.index[start:start + n],
                              table.vectors[start:start + n], table.attrs)
        start += n
    return Embeddings([], table.index[:0], table.vectors[:0], table.attrs)


def concat_h5(paths: Iterable[str | os.PathLike], mmap: bool = False, sample: str | None = None) -> Embeddings:
    """Concatenate per-shard tables of one model (attributes of the first non-empty); with
    ``sample``, only that sample's rows of a batch's shards."""
    paths = list(paths)
    tables = [read_h5(p, mmap=mmap) for p in paths]
    if sample is not None:
        tables = [sample_rows(t, sample) for t in tables]
    if not tables:
        raise MergeError("no embedding files to merge")
    settings = {p: tuple(str(t.attrs.get(k, "")) for k in SETTINGS) for p, t in zip(paths, tables) if t.ids}
    if len(set(settings.values())) > 1:
        shown = "; ".join(f"{p}: {', '.join(f'{k} {v}' for k, v in zip(SETTINGS, s))}" for p, s in settings.items())
        raise MergeError(f"shards of one model were embedded with different settings ({shown}); "
                         "rerun the embedding of this sample with one setting (e.g. snakemake --forcerun shard)")
    dims = {t.dim for t in tables if t.ids}
    if len(dims) > 1:
        raise MergeError(f"embedding files disagree on the vector width: {sorted(dims)}")
    attrs = next((t.attrs for t in tables if t.ids), tables[0].attrs)
    dim = dims.pop() if dims else tables[0].dim
    filled = [t for t in tables if t.ids]
    if len(filled) == 1:  # one shard (the usual case below shard_frames frames): no copy
        return Embeddings(filled[0].ids, filled[0].index, filled[0].vectors, attrs)
    ids = [i for t in tables for i in t.ids]
    index = np.concatenate([t.index for t in tables]) if ids else np.zeros(0, np.int64)
    vectors = np.concatenate([t.vectors for t in filled]) if ids else np.zeros((0, dim), np.float32)
    return Embeddings(ids, index, vectors, attrs)


def _duplicates(ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups = []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    return dups


@dataclass
class Features:
    """A sample's classifier input, rows ``[DNABERT-S | ESM-2]`` (the models in feature order) in input
    order, gathered from the models' vectors block by block: scoring never needs the whole N x 3,328 table
    (1.6 GB per 120,000 frames) in memory, only :meth:`table` (``features.h5``) builds it."""

    ids: list[str]
    index: np.ndarray  # (N,) input positions
    vectors: list[np.ndarray]  # per model, (N, D_model) in its files' order
    rows_of: list[np.ndarray]  # per model, (N,) its row for each feature row
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(sum(v.shape[1] for v in self.vectors))

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Feature rows ``start:stop`` (float32), into ``out`` (at least that many rows) when given."""
        n = min(stop, len(self)) - start
        block = np.empty((n, self.dim), np.float32) if out is None else out[:n]
        col = 0
        for vectors, rows in zip(self.vectors, self.rows_of):
            block[:, col:col + vectors.shape[1]] = vectors[rows[start:start + n]]
            col += vectors.shape[1]
        return block

    def table(self) -> Embeddings:
        """The whole table, for ``features.h5`` and the original's ``_merged.pt``."""
        full = np.empty((len(self), self.dim), np.float32)
        for start in range(0, len(self), _BLOCK_ROWS):
            self.rows(start, start + _BLOCK_ROWS, out=full[start:])
        return Embeddings(self.ids, self.index, full, self.attrs)


def _nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Per row, whether any value is NaN or Inf (in row blocks: no N x D boolean temporary)."""
    bad = np.zeros(len(vectors), dtype=bool)
    for start in range(0, len(vectors), _BLOCK_ROWS):
        bad[start:start + _BLOCK_ROWS] = ~np.isfinite(vectors[start:start + _BLOCK_ROWS]).all(axis=1)
    return bad


def join_by_id(tables: Mapping[str, Embeddings]) -> Features:
    """Join the models' vectors (``tables``: model name -> its vectors, in feature order) into features
    ``[DNABERT-S | ESM-2]``, in input order.

    Every ID must be present exactly once in every table with the same input
    position, and every value must be finite; anything else raises
    :class:`MergeError` or :class:`NumericalError` naming the IDs (never a
    silent shift of vectors against IDs).
    """
    from virnucflow.models.registry import get

    labels = {name: get(name).label for name in tables}
    for name, table in tables.items():
        dups = _duplicates(table.ids)
        if dups:
            raise MergeError(f"{labels[name]} embeddings list these IDs more than once: {_listed(dups)}")
    (first, ref), *others = tables.items()
    ref_pos = {i: k for k, i in enumerate(ref.ids)}
    positions = {name: {i: k for k, i in enumerate(t.ids)} for name, t in others}
    for name, table in others:
        missing = [i for i in ref.ids if i not in positions[name]]
        extra = [i for i in table.ids if i not in ref_pos]
        parts = [f"{len(missing)} IDs have no {labels[name]} embedding: {_listed(missing)}"] if missing else []
        parts += [f"{len(extra)} IDs have no {labels[first]} embedding: {_listed(extra)}"] if extra else []
        if parts:
            raise MergeError("; ".join(parts))
    order = np.argsort(ref.index, kind="stable")
    ids = [ref.ids[k] for k in order]
    rows_of = [order]
    bad = _nonfinite_rows(ref.vectors)[order]
    for name, table in others:
        rows = np.fromiter((positions[name][i] for i in ids), dtype=np.int64, count=len(ids))
        moved = [i for i, a, b in zip(ids, table.index[rows], ref.index[order]) if a != b]
        if moved:
            raise MergeError(f"IDs at different input positions in the models' files ({labels[first]}, "
                             f"{labels[name]}): {_listed(moved)}")
        bad |= _nonfinite_rows(table.vectors)[rows]
        rows_of.append(rows)
    if bad.any():
        raise NumericalError(f"non-finite feature values for {_listed([ids[k] for k in np.flatnonzero(bad)])}")
    return Features(ids, ref.index[order], [t.vectors for t in tables.values()], rows_of)


def read_features(
    files: Mapping[str, Sequence[str | os.PathLike]],
    attrs: dict[str, Any] | None = None,
    sample: str | None = None,
) -> Features:
    """A sample's classifier features from its per-shard embedding files (``files``: model name -> files,
    in feature order; ``sample``: its rows of a batch's files), joined by ID (:func:`join_by_id`), with the
    models' and settings' attributes of ``features.h5``."""
    from virnucflow.models.registry import get

    tables = {name: concat_h5(paths, mmap=True, sample=sample) for name, paths in files.items()}  # used in place
    features = join_by_id(tables)
    meta: dict[str, Any] = {}
    for name, table in tables.items():
        meta.update({f"{name}_{k}": v for k, v in table.attrs.items() if k not in ("workflow_version", "samples")})
    meta.update({"dims": [t.dim for t in tables.values()],
                 "layout": f"[{' | '.join(get(n).label for n in tables)}] mean-pooled, float32"})
    meta["demo_models"] = any(bool(t.attrs.get("demo_model", False)) for t in tables.values())
    meta.update(attrs or {})
    features.attrs = meta
    return features


def merge_features(
    files: Mapping[str, Sequence[str | os.PathLike]],
    out: str | os.PathLike,
    attrs: dict[str, Any] | None = None,
    sample: str | None = None,
) -> Embeddings:
    """Merge per-shard embedding files of a sample (``files``: model name -> files, in feature order;
    ``sample``: its rows of a batch's files) into ``features.h5``."""
    table = read_features(files, attrs, sample=sample).table()
    write_h5(out, table, dataset="features")
    log.info("merged %d frames into %s (%d features each)", len(table.ids), out, table.dim)
    return table


#: Attributes of an embedding file kept in its shard's info (the rest describe the model file).
INFO_ATTRS = ("model_kind", "model_spec", "model_path", "demo_model", "precision", "precision_requested",
              "attention", "packing", "device", "pooling", "recomputed_fp32", "workflow_version", "torch_version")


def write_embedding_info(files: dict[str, str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """A shard's record of its embedding (``model -> its embedding file``): per model the file's
    attributes (model, precision, attention, device, statistics) and frames, and the samples' parts.
    What the NaN/Inf gate and the run report read, also once the embedding files are removed."""
    info: dict[str, Any] = {"models": {}}
    for model, path in files.items():
        try:
            with h5py.File(path, "r") as h5:
                attrs, frames = _attrs(h5), int(h5["ids"].shape[0])
        except (OSError, KeyError) as exc:
            raise InputError(f"{path}: truncated, damaged or not a VirNucFlow embeddings file ({short(exc, 200)}); "
                             "delete it and rerun") from None
        entry: dict[str, Any] = {k: attrs[k] for k in INFO_ATTRS if k in attrs}
        stats = attrs.get("stats")
        entry["stats"] = json.loads(stats) if isinstance(stats, str) else {}
        entry["frames"] = frames
        info["models"][model] = {k: v.item() if isinstance(v, np.generic) else v for k, v in entry.items()}
        parts = attrs.get("samples")
        info["samples"] = json.loads(parts) if isinstance(parts, str) else [["", frames]]
    with atomic_outputs([out]) as (tmp,):
        Path(tmp).write_text(json.dumps(info, indent=1, sort_keys=True, default=str) + "\n")
    return info


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """A shard's JSON record (:func:`write_embedding_info`, or its score summary)."""
    with open(path) as f:
        return json.load(f)


def export_merged_pt(table: Embeddings, path: str | os.PathLike) -> None:
    """Write the original's ``output_N_merged.pt``: ``{'ids': [...], 'data': FloatTensor[N, D]}``."""
    import torch

    with atomic_outputs([path]) as (tmp,):
        torch.save({"ids": list(table.ids), "data": torch.from_numpy(table.vectors.copy())}, tmp)
