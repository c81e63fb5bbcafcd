"""What each rule's jobs ask a scheduler for, from the config's ``resources`` section.

The defaults live once, in ``workflow/schemas/config.schema.yaml``; the rules
declare them (``threads:`` and ``resources:``), so Snakemake composes them with
a site profile's ``default-resources`` (which fill only keys a rule leaves
out) and a command-line ``--set-resources RULE:KEY=VALUE`` (which replaces only
that key) instead of one profile's ``set-resources`` block replacing another's.

``runtime: auto`` (the default of the embedding rule) derives a job's time
limit from its work: the tokens of its shard for each model, the models'
measured H100 throughput, their start-up time, a safety factor for slower GPUs,
a floor, and Snakemake's ``attempt`` (a retried job gets twice, three times the
limit). ``mem_mb: auto`` (the default of the rules that hold a sample's vectors
in memory: merge, export_merged_pt, only run for output.features/merged_pt) derives a job's memory from the
size of its input files, likewise times the attempt. A number in the config, or
``--set-resources embed:runtime=N``, is used as given.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, Mapping

from virnucflow.models.registry import get, names

# Resources that only mean something with a GPU: dropped when the embedding runs on CPUs.
GPU_ONLY = ("gpu_model", "cpus_per_gpu", "gres", "tasks_per_gpu")


EMBED_RULE = "embed"  # the one rule with runtime: auto: a shard, every model in turn
FLOOR_MIN = 15  # never ask for less (queue, file system and start-up variance)
SAFETY = 4  # a slower GPU (an A100 is about half an H100, older ones less), a shared node, FP32 recomputes


def frame_tokens(model: str, nucleotide_length: int, protein_length: int) -> int:
    """Tokens of one frame for ``model`` (its registered count: ESM-2 residues + <cls> + <eos>; DNABERT-S BPE
    pieces, ~4 bases each, + [CLS] + [SEP]): the shard balancing's estimate
    (``virnucflow.steps.shard.frame_cost`` is their sum)."""
    try:
        spec = get(model)
    except KeyError as exc:
        raise ValueError(f"no token count for model {model!r}") from exc
    return spec.frame_tokens(nucleotide_length, protein_length)


@functools.lru_cache(maxsize=256)
def _planned(path: str, shard: str, size: int, mtime_ns: int) -> dict[str, int]:
    from virnucflow.steps.shard import planned_tokens

    return planned_tokens(path, shard)


def shard_tokens(plan: str | os.PathLike, shard: str) -> dict[str, int]:
    """Tokens per model of one shard of a batch's plan (``results/batches/{batch}/shards.tsv``); read once per plan."""
    st = os.stat(plan)
    return _planned(os.fspath(plan), shard, st.st_size, st.st_mtime_ns)


def embed_runtime(tokens: Mapping[str, int], attempt: int = 1) -> int:
    """Time limit in minutes of an embedding job of ``tokens`` (model -> its tokens), on its ``attempt``-th try.

    ``ceil(sum over models of (startup + SAFETY * tokens / tokens_per_s) / 60)``, at
    least the floor, times ``attempt``. (The start-ups are summed although the
    job overlaps ESM-2's checkpoint read with DNABERT-S: a margin.)
    """
    seconds = sum(get(m).start_seconds + SAFETY * n / get(m).tokens_per_second for m, n in tokens.items())
    return max(FLOOR_MIN, math.ceil(seconds / 60)) * max(1, int(attempt))


def auto_runtime() -> Callable[..., int]:
    """A Snakemake resource callable: the embedding job's ``runtime`` from its shard's tokens in the batch's
    plan (input ``plan``) and the attempt.

    Before the shard exists (dry runs, DAG building) Snakemake shows it as <TBD>
    and evaluates it again when the job is submitted.
    """

    def runtime(wildcards, input, attempt):
        tokens = shard_tokens(input.plan, wildcards.shard)
        return embed_runtime({m: tokens[m] for m in names()}, attempt)

    runtime.__name__ = f"{EMBED_RULE}_runtime"
    return runtime


#: Host memory of the rules that hold a sample's vectors (output.features, output.merged_pt), per MB
#: of their input files (the embedding files, or features.h5), with a 25% margin over what they
#: used on 200,000 reads (1.6 GB of embeddings; max RSS: merge 2.0x, export_merged_pt 2.05x), plus
#: a base for Python, PyTorch and pandas. No other rule holds more of a sample than a block of it.
MEMORY_PER_INPUT_MB = {"merge": 2.5, "export_merged_pt": 2.5}
MEMORY_BASE_MB = 1000


def job_memory_mb(rule: str, input_bytes: int, attempt: int = 1) -> int:
    """Memory in MB of a ``rule`` job reading ``input_bytes``, on its ``attempt``-th try."""
    return math.ceil(MEMORY_BASE_MB + MEMORY_PER_INPUT_MB[rule] * input_bytes / 1e6) * max(1, int(attempt))


def auto_mem_mb(rule: str) -> Callable[..., int]:
    """A Snakemake resource callable: the job's ``mem_mb`` from the size of its input files and the attempt."""

    def mem_mb(wildcards, input, attempt):
        return job_memory_mb(rule, sum(os.path.getsize(f) for f in input), attempt)

    mem_mb.__name__ = f"{rule}_mem_mb"
    return mem_mb


def rule_threads(config: Mapping[str, Any], rule: str) -> int:
    """CPU cores of one rule's jobs (``resources.<rule>.cpus``; SLURM ``--cpus-per-task``)."""
    return int(config["resources"][rule]["cpus"])


def rule_resources(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """One rule's ``resources:`` (all of ``resources.<rule>`` but ``cpus``, which are its threads).

    ``runtime: auto`` becomes a callable (``auto_runtime``): only the embedding
    rule has one; ``mem_mb: auto`` one of ``auto_mem_mb`` (the rules of
    :data:`MEMORY_PER_INPUT_MB`). With ``embedding.device: cpu`` a GPU rule asks for no GPU
    (``gpu=0``: no ``--gpus``, no gres) and none of the GPU-only keys, so it
    runs on any node.
    """
    spec = {k: v for k, v in config["resources"][rule].items() if k != "cpus"}
    if spec.get("runtime") == "auto":
        if rule != EMBED_RULE:
            raise ValueError(f"resources.{rule}.runtime: auto is only for {EMBED_RULE}; give minutes")
        spec["runtime"] = auto_runtime()
    if spec.get("mem_mb") == "auto":
        if rule not in MEMORY_PER_INPUT_MB:
            raise ValueError(f"resources.{rule}.mem_mb: auto is only for {', '.join(MEMORY_PER_INPUT_MB)}; give MB")
        spec["mem_mb"] = auto_mem_mb(rule)
    if "gpu" in spec and config["embedding"]["device"] == "cpu":
        spec["gpu"] = 0
        for key in GPU_ONLY:
            spec.pop(key, None)
    return spec
