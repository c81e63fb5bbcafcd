"""Split a sample's identified frames into token-balanced shards for the GPU jobs.

Cost of a frame = ESM-2 tokens (residues + <cls> + <eos>) + an estimate of its
DNABERT-S tokens (BPE pieces average about 4-5 bases; we count
``ceil(len/4) + 2`` with [CLS]/[SEP]). Shards are contiguous runs of frames cut
where the cumulative cost crosses ``k * total / n``: balanced to within one
frame's cost, order-preserving, and streamable. Each row keeps the frame's
position in the identified files (``index``), so the merge restores input
order whatever the shard layout.

Shard file (TSV with a header): ``index  id  nucleotide  protein``.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from .atomic import atomic_outputs
from .errors import InputError
from .preprocess import iter_identified

log = logging.getLogger("virnucflow")
SHARD_HEADER = "index\tid\tnucleotide\tprotein\n"


def frame_cost(nucleotide_length: int, protein_length: int) -> int:
    return (protein_length + 2) + (-(-nucleotide_length // 4) + 2)


def balanced_cuts(costs: np.ndarray, n: int) -> np.ndarray:
    """Start offsets of ``n`` contiguous shards (``n+1`` values, first 0, last len)."""
    total = costs.sum()
    if len(costs) == 0 or total == 0:
        return np.zeros(n + 1, dtype=np.int64)
    cum = np.cumsum(costs)
    targets = total * np.arange(1, n) / n
    inner = np.searchsorted(cum, targets, side="left") + 1
    return np.concatenate([[0], np.minimum(inner, len(costs)), [len(costs)]]).astype(np.int64)


def write_shards(nucleotide_fa: str | os.PathLike, protein_faa: str | os.PathLike, outputs: Sequence[str | os.PathLike]) -> list[int]:
    """Write ``len(outputs)`` shard files; returns the number of frames in each."""
    costs = np.fromiter(
        (frame_cost(len(f.nucleotide), len(f.protein)) for f in iter_identified(nucleotide_fa, protein_faa)),
        dtype=np.int64,
    )
    cuts = balanced_cuts(costs, len(outputs))
    counts = np.diff(cuts).tolist()
    with atomic_outputs(outputs) as tmps:
        handles = [open(t, "w", buffering=1 << 20) for t in tmps]
        try:
            for h in handles:
                h.write(SHARD_HEADER)
            shard = 0
            for index, frame in enumerate(iter_identified(nucleotide_fa, protein_faa)):
                while index >= cuts[shard + 1]:
                    shard += 1
                handles[shard].write(f"{index}\t{frame.id}\t{frame.nucleotide}\t{frame.protein}\n")
        finally:
            for h in handles:
                h.close()
    log.info("wrote %d shards with %s frames", len(counts), counts)
    return counts


def read_shard(path: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Index, IDs, nucleotide and protein sequences of one shard file."""
    index, ids, nts, aas = [], [], [], []
    with open(path) as f:
        header = f.readline()
        if header != SHARD_HEADER:
            raise InputError(f"{path}: not a VirNucFlow shard file (header {header.strip()!r})")
        for line in f:
            i, rid, nt, aa = line.rstrip("\n").split("\t")
            index.append(int(i))
            ids.append(rid)
            nts.append(nt)
            aas.append(aa)
    return np.asarray(index, dtype=np.int64), ids, nts, aas
