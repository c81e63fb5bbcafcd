# Figures and tables for `snakemake --report`: per sample (calls, scores,
# lengths, windows) and per run (inputs, embedding jobs, time per rule).


rule report_sample:
    input:
        summary="results/{sample}/summary.tsv",
    output:
        png=report(
            "results/{sample}/report/calls.png",
            caption="../report/sample_figures.rst",
            category="Calls",
            labels={"sample": "{sample}", "figure": "calls, scores, lengths, windows"},
        ),
    log:
        "logs/{sample}/report_sample.log",
    benchmark:
        "logs/benchmarks/{sample}/report_sample.tsv"
    conda:
        ENV
    threads: rule_threads(config, "report_sample")
    resources:
        **rule_resources(config, "report_sample"),
    script:
        "../scripts/report_sample.py"


rule report_run:
    input:
        info=all_embedding_infos(),
        records=expand("results/{sample}/preprocess/records.tsv", sample=SAMPLES),
        sources=expand("results/{sample}/preprocess/input.json", sample=SAMPLES),
        done=expand("results/{sample}/summary.tsv", sample=SAMPLES),
    output:
        inputs=report(
            "results/run/inputs.tsv",
            caption="../report/inputs.rst",
            category="Run",
            labels={"table": "inputs per sample"},
        ),
        jobs=report(
            "results/run/embedding_jobs.tsv",
            caption="../report/embedding_jobs.rst",
            category="Run",
            labels={"table": "embedding jobs"},
        ),
        times=report(
            "results/run/rule_times.png",
            caption="../report/rule_times.rst",
            category="Run",
            labels={"figure": "wall time per rule"},
        ),
        times_tsv=report(
            "results/run/rule_times.tsv",
            caption="../report/rule_times_table.rst",
            category="Run",
            labels={"table": "time per rule"},
        ),
    log:
        "logs/report_run.log",
    benchmark:
        "logs/benchmarks/report_run.tsv"
    conda:
        ENV
    threads: rule_threads(config, "report_run")
    resources:
        **rule_resources(config, "report_run"),
    params:
        benchmarks="logs/benchmarks",
        inputs={
            name: [s.fasta] + ([s.mate2] if s.mate2 else [])
            for name, s in SAMPLES.items()
        },
        batches=BATCH_OF,
    script:
        "../scripts/report_run.py"
