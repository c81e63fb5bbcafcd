"""Rule score: one shard's frames through the VirNucPro classifier (virnucflow.score)."""
from virnucflow.score import score_shard
from virnucflow.step import rule_step

with rule_step(snakemake):
    score_shard(snakemake.input.dnabert_s, snakemake.input.esm2, snakemake.input.classifier,
                snakemake.output.scores, snakemake.output.info)
