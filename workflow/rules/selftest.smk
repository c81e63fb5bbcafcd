# `snakemake selftest`: this installation, with the configured models, against the original
# VirNucPro's outputs on reference cases (virnucflow.steps.selftest), as a job of the user's profile (on
# SLURM, a GPU node). Not part of `all`; `--forcerun selftest` repeats it.


rule selftest:
    input:
        models=rules.models_manifest.output.manifest,
    output:
        table="results/selftest/selftest.tsv",
    log:
        "logs/selftest.log",
    benchmark:
        "logs/benchmarks/selftest.tsv"
    conda:
        ENV
    threads: rule_threads(config, "selftest")
    resources:
        **rule_resources(config, "selftest"),
    params:
        config={
            key: config[key]
            for key in ("chunk_length", "embedding", "selftest", "fp32_compare")
        },
        compile_cache=config["compile_cache"],
    message:
        "Checking this installation against the original VirNucPro's outputs (selftest)"
    script:
        "../scripts/selftest.py"
