"""Which samples share embedding jobs: the run's batches, planned when the DAG is built.

An embedding job pays a fixed start (Python, CUDA, both models: seconds to a
minute) before its first frame, so a plate of small samples with one job each
spends more time starting than computing. Jobs are therefore sized by frames,
not by samples:

- ``shards: auto`` (the default): samples are taken in sheet order; a sample of
  at least ``shard_frames`` frames is a batch of its own with one shard per
  ``shard_frames`` frames (at most ``max_shards``); smaller samples are pooled
  into one batch until it holds ``shard_frames`` frames, so one GPU job serves
  them all. A sample waits only for the samples of its own batch.
- ``shards: N``: every sample is a batch of its own with N shards, as before
  pooling existed.

Either way a batch gets at most one shard per 4,096 frames (the classifier's
batch, at which shards are cut): more would be empty GPU jobs.

A batch is named after its first sample. Scores do not depend on the batching
(shards are cut at whole classifier batches of each sample,
:mod:`virnucflow.steps.shard`), so a sample's calls are the same whichever samples
run beside it. Frame counts come from :func:`virnucflow.planning.inputs.input_info`
(an estimate above 20,000 windows; None for an unreadable file, which then
becomes a batch of its own and fails in preprocessing with its own message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass
class Batch:
    name: str
    samples: list[str] = field(default_factory=list)
    frames: int = 0
    shards: int = 1


def useful_shards(shards: int, frames: int | None) -> int:
    """At most one shard per classifier batch of frames (shards are cut at whole batches, so more
    would be empty GPU jobs); an unknown count does not cap."""
    from virnucflow.models.registry import CLASSIFIER_BATCH

    return max(1, shards if frames is None else min(shards, -(-frames // CLASSIFIER_BATCH)))


def plan_batches(frames: Mapping[str, int | None], shards: int | str, shard_frames: int,
                 max_shards: int) -> dict[str, Batch]:
    """Batches of the samples ``frames`` (sample -> its frame count, in sheet order), by name."""
    batches: list[Batch] = []
    if shards != "auto":
        for sample, n in frames.items():
            batches.append(Batch(sample, [sample], n or 0, useful_shards(int(shards), n)))
        return {b.name: b for b in batches}
    pool: Batch | None = None
    for sample, n in frames.items():
        if n is None or n >= shard_frames:
            batches.append(Batch(sample, [sample], n or 0, useful_shards(min(max_shards, -(-(n or 0) // shard_frames)), n)))
            continue
        if pool is None:
            pool = Batch(sample)
            batches.append(pool)
        pool.samples.append(sample)
        pool.frames += n
        if pool.frames >= shard_frames:
            pool.shards = useful_shards(min(max_shards, -(-pool.frames // shard_frames)), pool.frames)
            pool = None
    return {b.name: b for b in batches}
