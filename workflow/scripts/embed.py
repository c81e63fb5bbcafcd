"""Rules embed_esm2 / embed_dnabert_s: one shard, one model, one GPU (virnucflow.engine)."""
from virnucflow.engine import EmbedOptions, embed_shard
from virnucflow.gpu import claim_gpu, use_compile_cache
from virnucflow.step import rule_step

with rule_step(snakemake):
    claim_gpu()  # local multi-GPU runs: take a free GPU (SLURM already set CUDA_VISIBLE_DEVICES)
    use_compile_cache(snakemake.params.compile_cache)
    options = EmbedOptions(**snakemake.params.options, threads=snakemake.threads)
    embed_shard(snakemake.params.model, snakemake.input.models, snakemake.input.shard, snakemake.output.h5, options,
                nonfinite_out=snakemake.output.nonfinite)
