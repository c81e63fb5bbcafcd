"""Rule predict: a sample's calls, summary and window tracks from its shards' scores (virnucflow.steps.predict)."""
from virnucflow.steps.predict import gather_sample
from virnucflow.io.features import read_info
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    out = snakemake.output
    gather_sample(snakemake.wildcards.sample, snakemake.input.records, snakemake.input.scores,
                  snakemake.params.chunk_length, out.predictions, out.highest, out.summary, out.bed, out.windows,
                  demo=any(read_info(f)["demo"] for f in snakemake.input.info), **snakemake.params.calling)
