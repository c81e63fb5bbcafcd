# Quality control of the embeddings: the NaN/Inf gate of each batch before its samples' calls, and
# `snakemake fp32_compare`, the production path against FP32 on the samples' own frames.


rule nan_gate:
    input:
        nonfinite=batch_outputs("results/batches/{batch}/nonfinite/{model}/{shard}.tsv"),
        info=batch_outputs("results/batches/{batch}/embed/{shard}.json"),
    output:
        table=report(
            "results/batches/{batch}/nan_gate.tsv",
            caption="../report/nan_gate.rst",
            category="Quality control",
            labels={"batch": "{batch}", "table": "NaN/Inf gate"},
        ),
    log:
        "logs/batches/{batch}/nan_gate.log",
    benchmark:
        "logs/benchmarks/batches/{batch}/nan_gate.tsv"
    conda:
        ENV
    threads: rule_threads(config, "nan_gate")
    resources:
        **rule_resources(config, "nan_gate"),
    params:
        models=list(EMBEDDING_MODELS),
        max_fraction=config["qc"]["max_fp32_recompute_fraction"],
    script:
        "../scripts/nan_gate.py"


rule fp32_compare_sample:
    input:
        nucleotide=rules.preprocess.output.nucleotide,
        protein=rules.preprocess.output.protein,
        models=rules.models_manifest.output.manifest,
    output:
        per_sequence="results/{sample}/qc/fp32_compare/per_sequence.tsv",
        summary=report(
            "results/{sample}/qc/fp32_compare/summary.tsv",
            caption="../report/fp32_compare_summary.rst",
            category="Quality control",
            labels={"sample": "{sample}", "table": "FP16 vs FP32 summary"},
        ),
        calls="results/{sample}/qc/fp32_compare/calls.tsv",
        agreement=report(
            "results/{sample}/qc/fp32_compare/call_agreement.tsv",
            caption="../report/fp32_compare_agreement.rst",
            category="Quality control",
            labels={"sample": "{sample}", "table": "FP16 vs FP32 call agreement"},
        ),
        cosine_png=report(
            "results/{sample}/qc/fp32_compare/cosine.png",
            caption="../report/fp32_compare_cosine.rst",
            category="Quality control",
            labels={"sample": "{sample}", "figure": "FP16 vs FP32 cosine"},
        ),
        scores_png=report(
            "results/{sample}/qc/fp32_compare/scores.png",
            caption="../report/fp32_compare_scores.rst",
            category="Quality control",
            labels={"sample": "{sample}", "figure": "FP16 vs FP32 scores"},
        ),
    log:
        "logs/{sample}/fp32_compare.log",
    benchmark:
        "logs/benchmarks/{sample}/fp32_compare_sample.tsv"
    conda:
        ENV
    threads: rule_threads(config, "fp32_compare_sample")
    resources:
        **rule_resources(config, "fp32_compare_sample"),
    params:
        embedding=EMBEDDING_OPTIONS,
        settings=config["fp32_compare"],
        compile_cache=config["compile_cache"],
    message:
        "{wildcards.sample}: the production embedding path against FP32 (fp32_compare)"
    script:
        "../scripts/fp32_compare.py"


rule fp32_compare:
    input:
        expand("results/{sample}/qc/fp32_compare/summary.tsv", sample=SAMPLES),
