# One job per shard of a batch runs both models in turn, on one GPU (SLURM
# allocates it; locally a lock file picks a free GPU): Python, CUDA and the
# shard are set up once and ESM-2's checkpoint is read ahead while DNABERT-S
# computes. A batch is one sample or several small ones (one job serves them
# all). FP16 packed attention by default; the embedding section of the config
# rolls back precision, packing and backend, per model. Then each shard is
# scored as soon as it is embedded (while the next one embeds), and its vectors
# are removed unless output.embeddings keeps them.


rule embed:
    input:
        unpack(batch_files),
        **{f"{m}_model": f"results/models/{m}.json" for m in EMBEDDING_MODELS},
        plan=rules.plan_shards.output.plan,
    output:
        **{f"{m}_h5": embedding_output(m) for m in EMBEDDING_MODELS},
        **{
            f"{m}_nonfinite": f"results/batches/{{batch}}/nonfinite/{m}/{{shard}}.tsv"
            for m in EMBEDDING_MODELS
        },
        info="results/batches/{batch}/embed/{shard}.json",
    log:
        "logs/batches/{batch}/embed/{shard}.log",
    benchmark:
        "logs/benchmarks/batches/{batch}/embed/{shard}.tsv"
    priority: 100
    conda:
        ENV
    threads: rule_threads(config, "embed")
    resources:
        **rule_resources(config, "embed"),
    params:
        models=list(EMBEDDING_MODELS),
        samples=lambda wildcards: BATCHES[wildcards.batch].samples,
        options=EMBEDDING_OPTIONS,
        compile_cache=config["compile_cache"],
    message:
        f"batch {{wildcards.batch}} {{wildcards.shard}}: {' and '.join(EMBEDDING_MODELS.values())} embeddings"
    script:
        "../scripts/embed.py"


rule score:
    input:
        **{
            m: f"results/batches/{{batch}}/embeddings/{m}/{{shard}}.h5"
            for m in EMBEDDING_MODELS
        },
        classifier="results/models/classifier.json",
    output:
        scores="results/batches/{batch}/scores/{shard}.tsv",
        info="results/batches/{batch}/scores/{shard}.json",
    log:
        "logs/batches/{batch}/score/{shard}.log",
    benchmark:
        "logs/benchmarks/batches/{batch}/score/{shard}.tsv"
    priority: 50
    conda:
        ENV
    threads: rule_threads(config, "score")
    resources:
        **rule_resources(config, "score"),
    message:
        "batch {wildcards.batch} {wildcards.shard}: scoring frames with the VirNucPro classifier"
    script:
        "../scripts/score.py"
