# One job per shard and model, one GPU each (SLURM allocates it; locally a
# lock file picks a free GPU). FP16 packed FlashAttention by default; the
# embedding section of the config rolls back precision, packing and backend.


rule embed_dnabert:
    input:
        shard="results/{sample}/shards/{scatteritem}.tsv",
        models=rules.check_models.output.manifest,
    output:
        h5="results/{sample}/embeddings/dnabert_s/{scatteritem}.h5",
    log:
        "logs/{sample}/embed_dnabert/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/{sample}/embed_dnabert/{scatteritem}.tsv"
    params:
        options=embed_params,
    threads: 2
    resources:
        gpu=1,
    conda:
        ENV
    message:
        "{wildcards.sample} {wildcards.scatteritem}: DNABERT-S embeddings"
    script:
        "../scripts/embed.py"


rule embed_esm:
    input:
        shard="results/{sample}/shards/{scatteritem}.tsv",
        models=rules.check_models.output.manifest,
    output:
        h5="results/{sample}/embeddings/esm2/{scatteritem}.h5",
    log:
        "logs/{sample}/embed_esm/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/{sample}/embed_esm/{scatteritem}.tsv"
    params:
        options=embed_params,
    threads: 2
    resources:
        gpu=1,
    conda:
        ENV
    message:
        "{wildcards.sample} {wildcards.scatteritem}: ESM-2 embeddings"
    script:
        "../scripts/embed.py"
