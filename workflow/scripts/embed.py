"""Rule embed: one shard of a batch, every embedding model in turn, one GPU (virnucflow.engine)."""
from virnucflow.engine import EmbedOptions
from virnucflow.steps.embed import embed_shard_models
from virnucflow.planning.gpu import claim_gpu, use_compile_cache
from virnucflow.steps.shard import read_planned_shard
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    claim_gpu()  # local multi-GPU runs: take a free GPU (SLURM already set CUDA_VISIBLE_DEVICES)
    use_compile_cache(snakemake.params.compile_cache)
    models, samples = snakemake.params.models, snakemake.params.samples
    shard = read_planned_shard(
        snakemake.input.plan,
        snakemake.wildcards.shard,
        dict(zip(samples, zip(snakemake.input.nucleotide, snakemake.input.protein))),
        label=f"batch {snakemake.wildcards.batch} shard {snakemake.wildcards.shard}",
    )
    embed_shard_models(
        {m: snakemake.input[f"{m}_model"] for m in models},
        shard,
        {m: snakemake.output[f"{m}_h5"] for m in models},
        {m: EmbedOptions(**snakemake.params.options[m], threads=snakemake.threads) for m in models},
        nonfinite_outs={m: snakemake.output[f"{m}_nonfinite"] for m in models},
        info_out=snakemake.output.info,
    )
