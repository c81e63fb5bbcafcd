"""Rule shard: token-balanced shards of a sample's frames (virnucflow.shard)."""
from virnucflow.shard import write_shards
from virnucflow.step import rule_step

with rule_step(snakemake):
    write_shards(snakemake.input.nucleotide, snakemake.input.protein, snakemake.output)
