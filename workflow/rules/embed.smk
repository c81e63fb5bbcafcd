# One job per shard runs both models in turn, on one GPU (SLURM allocates it;
# locally a lock file picks a free GPU): Python, CUDA and the shard are set up
# once and ESM-2's checkpoint is read ahead while DNABERT-S computes. FP16 packed
# FlashAttention by default; the embedding section of the config rolls back
# precision, packing and backend, per model. Changing one model's options
# reruns the shard's job (DNABERT-S is ~5% of its GPU time).


rule embed:
    input:
        shard="results/{sample}/shards/{scatteritem}.tsv",
        **{f"{m}_model": f"results/models/{m}.json" for m in EMBEDDING_MODELS},
    output:
        **{f"{m}_h5": f"results/{{sample}}/embeddings/{m}/{{scatteritem}}.h5" for m in EMBEDDING_MODELS},
        **{f"{m}_nonfinite": f"results/{{sample}}/qc/nonfinite/{m}/{{scatteritem}}.tsv" for m in EMBEDDING_MODELS},
    log:
        "logs/{sample}/embed/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/{sample}/embed/{scatteritem}.tsv"
    params:
        models=list(EMBEDDING_MODELS),
        options={m: embedding_options(m) for m in EMBEDDING_MODELS},
        compile_cache=config["compile_cache"],
    threads: rule_threads(config, "embed")
    resources:
        **rule_resources(config, "embed"),
    conda:
        ENV
    message:
        f"{{wildcards.sample}} {{wildcards.scatteritem}}: {' and '.join(EMBEDDING_MODELS.values())} embeddings"
    script:
        "../scripts/embed.py"
