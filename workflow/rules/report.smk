# Figures and tables for `snakemake --report`: per sample (calls, scores,
# lengths, windows) and per run (embedding jobs, wall time per rule).


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
    threads: rule_threads(config, "report_sample")
    resources:
        **rule_resources(config, "report_sample"),
    conda:
        ENV
    script:
        "../scripts/report_sample.py"


rule report_run:
    input:
        embeddings=all_embedding_files(),
        done=expand("results/{sample}/windows.bed", sample=SAMPLES),
    output:
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
    log:
        "logs/report_run.log",
    params:
        benchmarks="logs/benchmarks",
    threads: rule_threads(config, "report_run")
    resources:
        **rule_resources(config, "report_run"),
    conda:
        ENV
    script:
        "../scripts/report_run.py"
