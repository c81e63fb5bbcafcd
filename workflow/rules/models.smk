# Model files: the demo models, and the check that resolves, fetches and
# validates all three models before any GPU job starts.


rule build_demo_models:
    output:
        esm2=DEMO_MODELS["esm2"],
        dnabert_s=directory(DEMO_MODELS["dnabert_s"]),
        classifier=DEMO_MODELS["classifier"],
    log:
        "logs/build_demo_models.log",
    benchmark:
        "logs/benchmarks/build_demo_models.tsv"
    params:
        seed=0,
    localrule: True
    conda:
        ENV
    message:
        "Building tiny random demo models (their predictions mean nothing)"
    script:
        "../scripts/build_demo_models.py"


rule check_models:
    input:
        unpack(model_files),
    output:
        manifest="results/models.json",
    log:
        "logs/check_models.log",
    benchmark:
        "logs/benchmarks/check_models.tsv"
    params:
        models=config["models"],
    localrule: True
    conda:
        ENV
    message:
        "Resolving and validating the model files"
    script:
        "../scripts/check_models.py"
