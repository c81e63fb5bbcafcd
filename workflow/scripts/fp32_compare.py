"""Rule fp32_compare_sample: the production embedding path against FP32 on the sample's frames (virnucflow.steps.fp32_compare)."""
from virnucflow.steps.fp32_compare import fp32_compare
from virnucflow.planning.gpu import use_compile_cache
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    use_compile_cache(snakemake.params.compile_cache)
    fp32_compare(snakemake.input.nucleotide, snakemake.input.protein, snakemake.input.models,
                 snakemake.params.embedding, snakemake.params.settings, snakemake.output, threads=snakemake.threads)
