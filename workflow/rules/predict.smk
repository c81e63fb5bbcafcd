# Per sample: its frames' scores gathered from its batch's per-shard tables in
# input order, into the original's prediction files, the per-sequence summary
# and the window tracks (in blocks of records: memory does not grow with the
# sample); features.h5 (the sample's vectors joined) only when asked for
# (output.features, output.merged_pt), which keeps the embedding files.


rule predict:
    input:
        scores=sample_batch_outputs("results/batches/{batch}/scores/{shard}.tsv"),
        info=sample_batch_outputs("results/batches/{batch}/scores/{shard}.json"),
        gate=lambda wildcards: f"results/batches/{BATCH_OF[wildcards.sample]}/nan_gate.tsv",
        records=rules.preprocess.output.records,
    output:
        predictions="results/{sample}/prediction_results.txt",
        highest="results/{sample}/prediction_results_highestscore.csv",
        summary=report(
            "results/{sample}/summary.tsv",
            caption="../report/summary.rst",
            category="Calls",
            labels={"sample": "{sample}", "table": "per-sequence summary"},
        ),
        bed="results/{sample}/windows.bed",
        windows="results/{sample}/windows.tsv",
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/benchmarks/{sample}/predict.tsv"
    priority: 10
    conda:
        ENV
    threads: rule_threads(config, "predict")
    resources:
        **rule_resources(config, "predict"),
    params:
        calling=calling_params,
        chunk_length=config["chunk_length"],
    message:
        "{wildcards.sample}: calls, summary and window tracks"
    script:
        "../scripts/predict.py"


rule merge:
    input:
        **{
            m: sample_batch_outputs(
                f"results/batches/{{batch}}/embeddings/{m}/{{shard}}.h5"
            )
            for m in EMBEDDING_MODELS
        },
        gate=lambda wildcards: f"results/batches/{BATCH_OF[wildcards.sample]}/nan_gate.tsv",
    output:
        features="results/{sample}/features.h5",
    log:
        "logs/{sample}/merge.log",
    benchmark:
        "logs/benchmarks/{sample}/merge.tsv"
    conda:
        ENV
    threads: rule_threads(config, "merge")
    resources:
        **rule_resources(config, "merge"),
    params:
        chunk_length=config["chunk_length"],
    script:
        "../scripts/merge.py"


rule export_merged_pt:
    input:
        features=rules.merge.output.features,
    output:
        pt="results/{sample}/{sample}_merged.pt",
    log:
        "logs/{sample}/export_merged_pt.log",
    benchmark:
        "logs/benchmarks/{sample}/export_merged_pt.tsv"
    conda:
        ENV
    threads: rule_threads(config, "export_merged_pt")
    resources:
        **rule_resources(config, "export_merged_pt"),
    script:
        "../scripts/export_merged_pt.py"
