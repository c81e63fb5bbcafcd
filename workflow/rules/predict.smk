# Score the features (the per-shard embeddings joined by ID in memory, refusing
# any mismatch or NaN/Inf) with the VirNucPro classifier, summarise per
# sequence; features.h5 (the same join written out) only when asked for
# (output.features, output.merged_pt), beside the prediction, not before it.


rule merge:
    input:
        dnabert_s=gather.embed("results/{{sample}}/embeddings/dnabert_s/{scatteritem}.h5"),
        esm2=gather.embed("results/{{sample}}/embeddings/esm2/{scatteritem}.h5"),
        gate="results/{sample}/qc/nan_gate.tsv",
    output:
        features="results/{sample}/features.h5",
    log:
        "logs/{sample}/merge.log",
    benchmark:
        "logs/benchmarks/{sample}/merge.tsv"
    params:
        chunk_length=config["chunk_length"],
    threads: rule_threads(config, "merge")
    resources:
        **rule_resources(config, "merge"),
    conda:
        ENV
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
    threads: rule_threads(config, "export_merged_pt")
    resources:
        **rule_resources(config, "export_merged_pt"),
    conda:
        ENV
    script:
        "../scripts/export_merged_pt.py"


rule predict:
    input:
        dnabert_s=gather.embed("results/{{sample}}/embeddings/dnabert_s/{scatteritem}.h5"),
        esm2=gather.embed("results/{{sample}}/embeddings/esm2/{scatteritem}.h5"),
        gate=rules.nan_gate.output.table,
        models="results/models/classifier.json",
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
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/benchmarks/{sample}/predict.tsv"
    params:
        calling=calling_params,
    threads: rule_threads(config, "predict")
    resources:
        **rule_resources(config, "predict"),
    conda:
        ENV
    message:
        "{wildcards.sample}: scoring frames with the VirNucPro classifier"
    script:
        "../scripts/predict.py"


rule windows:
    input:
        predictions=rules.predict.output.predictions,
        records=rules.preprocess.output.records,
    output:
        bed="results/{sample}/windows.bed",
        tsv="results/{sample}/windows.tsv",
    log:
        "logs/{sample}/windows.log",
    benchmark:
        "logs/benchmarks/{sample}/windows.tsv"
    params:
        chunk_length=config["chunk_length"],
    threads: rule_threads(config, "windows")
    resources:
        **rule_resources(config, "windows"),
    conda:
        ENV
    message:
        "{wildcards.sample}: window tracks (BED, TSV)"
    script:
        "../scripts/windows.py"
