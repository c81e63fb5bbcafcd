"""Rule score: one shard's frames through the VirNucPro classifier (virnucflow.steps.score)."""
from virnucflow.models.registry import names
from virnucflow.steps.score import score_shard
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    score_shard({m: snakemake.input[m] for m in names()}, snakemake.input.classifier, snakemake.output.scores,
                snakemake.output.info)
