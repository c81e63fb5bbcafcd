"""Rule plan_shards: token-balanced shards over a batch's frames (virnucflow.steps.shard)."""
from virnucflow.steps.shard import plan_shards
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    samples = snakemake.params.samples
    files = dict(zip(samples, zip(snakemake.input.nucleotide, snakemake.input.protein)))
    plan_shards(samples, files, snakemake.params.shards, snakemake.output.plan)
