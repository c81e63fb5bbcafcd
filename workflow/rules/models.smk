# Model files: the demo models, and the checks that resolve, fetch and
# validate each model before any GPU job starts. One manifest per model, so
# each embedding job depends only on its own model and changing the
# classifier reruns only the scoring; results/models.json joins them for
# fp32_compare.


rule build_demo_models:
    output:
        **DEMO_OUTPUTS,
    log:
        "logs/build_demo_models.log",
    benchmark:
        "logs/benchmarks/build_demo_models.tsv"
    localrule: True
    conda:
        ENV
    params:
        seed=0,
    message:
        "Building tiny random demo models (their predictions mean nothing)"
    script:
        "../scripts/build_demo_models.py"


rule check_model:
    input:
        unpack(model_file),
        unpack(model_manifests),
    output:
        manifest="results/models/{model}.json",
    log:
        "logs/models/{model}.log",
    benchmark:
        "logs/benchmarks/models/{model}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_KINDS),
    priority: 80
    localrule: True
    conda:
        ENV
    params:
        spec=model_spec,
        download=config["models"]["download"],
    message:
        "Resolving and validating the {wildcards.model} model"
    script:
        "../scripts/check_model.py"


rule models_manifest:
    input:
        expand("results/models/{model}.json", model=MODEL_KINDS),
    output:
        manifest="results/models.json",
    log:
        "logs/models/manifest.log",
    benchmark:
        "logs/benchmarks/models_manifest.tsv"
    localrule: True
    conda:
        ENV
    script:
        "../scripts/models_manifest.py"
