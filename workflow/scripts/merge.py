"""Rule merge: one sample's vectors of its batch's shards, joined by ID into features.h5 (virnucflow.io.features)."""
from virnucflow.io.features import merge_features
from virnucflow.models.registry import names
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    sample = snakemake.wildcards.sample
    merge_features({m: snakemake.input[m] for m in names()}, snakemake.output.features,
                   attrs={"chunk_length": snakemake.params.chunk_length, "sample": sample}, sample=sample)
