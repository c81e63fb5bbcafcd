# One job per shard and model, one GPU each (SLURM allocates it; locally a
# lock file picks a free GPU). FP16 packed FlashAttention by default; the
# embedding section of the config rolls back precision, packing and backend.

for _model in EMBEDDING_MODELS:

    rule:
        name:
            f"embed_{_model}"
        input:
            shard="results/{sample}/shards/{scatteritem}.tsv",
            models=f"results/models/{_model}.json",
        output:
            h5=f"results/{{sample}}/embeddings/{_model}/{{scatteritem}}.h5",
            nonfinite=f"results/{{sample}}/qc/nonfinite/{_model}/{{scatteritem}}.tsv",
        log:
            f"logs/{{sample}}/embed_{_model}/{{scatteritem}}.log",
        benchmark:
            f"logs/benchmarks/{{sample}}/embed_{_model}/{{scatteritem}}.tsv"
        params:
            model=_model,
            options=embedding_options(_model),
            compile_cache=config["compile_cache"],
        threads: rule_threads(config, f"embed_{_model}")
        resources:
            **rule_resources(config, f"embed_{_model}"),
        conda:
            ENV
        message:
            f"{{wildcards.sample}} {{wildcards.scatteritem}}: {EMBEDDING_MODELS[_model]} embeddings"
        script:
            "../scripts/embed.py"
