"""Cut a batch's frames into token-balanced shards for the GPU jobs, and read a shard back.

A batch is one sample, or several small samples pooled so that one GPU job
serves them all (:mod:`virnucflow.planning.batches`). Its frames are the samples'
identified files one after another; a shard is a contiguous run of them.

- Cost of a frame = its tokens in every embedding model, added up (each
  model's registered count: ESM-2 residues + <cls> + <eos>; DNABERT-S BPE
  pieces, about 4-5 bases each: ``ceil(len/4) + 2`` with [CLS]/[SEP]).
- Cuts are placed where the cumulative cost crosses ``k * total / n``, moved to
  the nearest position a cut may take: a sample's start or a multiple of the
  classifier's batch (:data:`CLASSIFIER_BATCH`, 4,096 frames) from
  it. A shard thus holds whole classifier batches of each sample, and scoring
  shard by shard computes exactly the batches that scoring the sample whole
  does (a row's score depends, by a few units in the last place, on the other
  rows of its batch through the CPU matrix product's blocking): the scores do
  not depend on the shard layout. Balance is within one batch of frames.
- No frames are copied: the plan (:func:`plan_shards`, one small TSV per batch)
  records where each shard's part of each sample starts in the identified files
  (frame position and byte offsets), and the embedding job reads its frames
  from there (:func:`read_planned_shard`). It also records each part's tokens
  per model, for the job's time limit.

Plan file columns: :data:`PLAN_COLUMNS`, one row per shard and sample part
(a shard with no frames has one row with ``sample`` empty).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from virnucflow.errors import InputError
from virnucflow.models.registry import CLASSIFIER_BATCH, embedding_models, names

log = logging.getLogger("virnucflow")
#: One tokens column per embedding model (``esm2_tokens``, ...; virnucflow.models.registry).
TOKEN_COLUMNS = [f"{m}_tokens" for m in names()]
PLAN_COLUMNS = ["shard", "sample", "first", "stop", "nucleotide_offset", "protein_offset", *TOKEN_COLUMNS]
#: The shard TSV of ``virnucflow embed --shard`` (and of tests): one frame a line.
SHARD_HEADER = "index\tid\tnucleotide\tprotein\n"


def model_tokens(nucleotide_length: int, protein_length: int) -> list[int]:
    """A frame's tokens for each embedding model (its registered count of what it reads), in model order."""
    return [spec.frame_tokens(nucleotide_length, protein_length) for spec in embedding_models()]


def frame_cost(nucleotide_length: int, protein_length: int) -> int:
    return sum(model_tokens(nucleotide_length, protein_length))


def shard_names(n: int) -> list[str]:
    return [f"{k}-of-{n}" for k in range(1, n + 1)]


@dataclass
class Shard:
    """The frames of one embedding job, in order; ``samples``: (sample, frames) parts, in order."""

    label: str
    index: np.ndarray  # (N,) each frame's position in its sample's identified files
    ids: list[str]
    nucleotides: list[str]
    proteins: list[str]
    samples: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _Cut:
    """A position a cut may take, with the cumulative costs before it."""

    sample: int
    first: int  # frame position in the sample
    nucleotide_offset: int
    protein_offset: int
    cost: int
    tokens: np.ndarray  # per model (virnucflow.models.registry order)


def _candidates(samples: Sequence[str], files: Mapping[str, tuple[str, str]], step: int) -> tuple[list[_Cut], list[int]]:
    """Every position a cut may take (a sample's start, every ``step`` frames from it) and each sample's frames."""
    cuts: list[_Cut] = []
    frames: list[int] = []
    cost, tokens = 0, np.zeros(len(TOKEN_COLUMNS), dtype=np.int64)
    for s, name in enumerate(samples):
        nt_path, aa_path = files[name]
        n = 0
        with open(nt_path, "rb") as nf, open(aa_path, "rb") as pf:
            nt_off = aa_off = 0
            while True:
                nh = nf.readline()
                if not nh:
                    if pf.readline():
                        raise InputError(f"{aa_path}: more records than {nt_path}")
                    break
                ns, ph, ps = nf.readline(), pf.readline(), pf.readline()
                if not nh.startswith(b">") or nh != ph or not ns.endswith(b"\n") or not ps.endswith(b"\n"):
                    raise InputError(f"{nt_path} and {aa_path}: record {n + 1} does not match "
                                     f"({nh.strip()!r} vs {ph.strip()!r})")
                if n % step == 0:
                    cuts.append(_Cut(s, n, nt_off, aa_off, cost, tokens.copy()))
                counts = model_tokens(len(ns) - 1, len(ps) - 1)
                cost, tokens = cost + sum(counts), tokens + counts
                nt_off += len(nh) + len(ns)
                aa_off += len(ph) + len(ps)
                n += 1
        frames.append(n)
        cuts.append(_Cut(s, n, nt_off, aa_off, cost, tokens.copy()))  # its end (the next sample's start) too
    return cuts, frames


def plan_shards(samples: Sequence[str], files: Mapping[str, tuple[str, str]], n: int, out: str | os.PathLike,
                step: int | None = None) -> list[int]:
    """Write the plan of ``n`` shards over the frames of ``samples`` (in order; ``files``: sample ->
    its identified nucleotide and protein files); returns the frames of each shard."""
    step = step or CLASSIFIER_BATCH
    cuts, frames = _candidates(samples, files, step)
    total = cuts[-1].cost if cuts else 0
    positions = [c.cost for c in cuts]
    chosen = [0]
    for k in range(1, n):
        target = total * k / n
        i = int(np.searchsorted(positions, target))
        if i >= len(cuts) or (i > 0 and target - positions[i - 1] <= positions[i] - target):
            i -= 1
        chosen.append(max(i, chosen[-1]))
    starts = [cuts[i] for i in chosen]
    rows, counts = [], []
    offsets = np.cumsum([0] + frames)  # each sample's first frame in the batch
    cut_at = {(c.sample, c.first): c for c in cuts}
    global_pos = [int(offsets[c.sample] + c.first) for c in starts] + [int(offsets[-1])]
    for k, name in enumerate(shard_names(n)):
        a, b = global_pos[k], global_pos[k + 1]
        counts.append(b - a)
        parts = 0
        for s, sample in enumerate(samples):
            lo, hi = max(a, offsets[s]), min(b, offsets[s + 1])
            if hi <= lo:
                continue
            first, stop = int(lo - offsets[s]), int(hi - offsets[s])
            start_cut, stop_cut = cut_at[s, first], cut_at[s, stop]
            rows.append({"shard": name, "sample": sample, "first": first, "stop": stop,
                         "nucleotide_offset": start_cut.nucleotide_offset, "protein_offset": start_cut.protein_offset,
                         **dict(zip(TOKEN_COLUMNS, (stop_cut.tokens - start_cut.tokens).tolist()))})
            parts += 1
        if not parts:
            rows.append({"shard": name, "sample": "", "first": 0, "stop": 0, "nucleotide_offset": 0,
                         "protein_offset": 0, **dict.fromkeys(TOKEN_COLUMNS, 0)})
    import pandas as pd

    from virnucflow.io.tables import write_tsv

    write_tsv(out, pd.DataFrame(rows, columns=PLAN_COLUMNS))
    log.info("%d frames of %d sample%s in %d shards of %s frames", sum(frames), len(samples),
             "" if len(samples) == 1 else "s", n, counts)
    return counts


def read_plan(path: str | os.PathLike):  # noqa: ANN201 (a pandas DataFrame)
    from virnucflow.io.tables import read_tsv

    plan = read_tsv(path, dtype={"shard": str, "sample": str})
    if sorted(plan.columns) != sorted(PLAN_COLUMNS):  # (0.9.0 wrote the token columns in another order)
        raise InputError(f"{path}: not a VirNucFlow shard plan (columns {list(plan.columns)})")
    return plan[PLAN_COLUMNS]


def planned_tokens(plan_tsv: str | os.PathLike, shard: str) -> dict[str, int]:
    """Tokens per model of one shard of a plan."""
    plan = read_plan(plan_tsv)
    mine = plan[plan["shard"] == shard]
    return {m: int(mine[f"{m}_tokens"].sum()) for m in names()}


def read_planned_shard(plan_tsv: str | os.PathLike, shard: str, files: Mapping[str, tuple[str, str]],
                       label: str | None = None) -> Shard:
    """The frames of ``shard`` of a plan, read from the samples' identified files (``files``)."""
    plan = read_plan(plan_tsv)
    mine = plan[(plan["shard"] == shard) & (plan["stop"] > plan["first"])]
    if not (plan["shard"] == shard).any():
        raise InputError(f"{plan_tsv}: no shard {shard!r} in the plan")
    out = Shard(label or f"{Path(plan_tsv).parent.name}/{shard}", np.zeros(0, np.int64), [], [], [])
    index = []
    for row in mine.itertuples(index=False):
        nt_path, aa_path = files[row.sample]
        n = int(row.stop - row.first)
        with open(nt_path, "rb") as nf, open(aa_path, "rb") as pf:
            nf.seek(int(row.nucleotide_offset))
            pf.seek(int(row.protein_offset))
            for k in range(n):
                nh, ns, ph, ps = nf.readline(), nf.readline(), pf.readline(), pf.readline()
                if not nh.startswith(b">") or nh != ph or not ps.endswith(b"\n"):
                    raise InputError(f"{nt_path}: frame {row.first + k + 1} is not where {plan_tsv} says: "
                                     "the identified files changed after planning (rerun with --forcerun plan_shards)")
                out.ids.append(nh[1:-1].decode())
                out.nucleotides.append(ns[:-1].decode())
                out.proteins.append(ps[:-1].decode())
        index.append(np.arange(row.first, row.stop, dtype=np.int64))
        out.samples.append((row.sample, n))
    if index:
        out.index = np.concatenate(index)
    return out


def read_shard(path: str | os.PathLike) -> Shard:
    """A shard TSV file (:data:`SHARD_HEADER`): ``virnucflow embed --shard``, tests and benchmarks."""
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
    return Shard(str(path), np.asarray(index, dtype=np.int64), ids, nts, aas)
