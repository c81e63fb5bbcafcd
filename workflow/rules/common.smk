# Helpers for the rules: configuration, sample sheet, model inputs, targets.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The workflow's own package (virnucflow/) lives beside this Snakefile.
sys.path.insert(0, workflow.basedir)
from virnucflow.engine import ENV_DISABLE_FP16, ENV_PRECISION, model_options  # noqa: E402
from virnucflow.errors import VirNucFlowError  # noqa: E402
from virnucflow.models.acquire import CLASSIFIER_NAMES, known_kind  # noqa: E402
from virnucflow.resources import rule_resources, rule_threads  # noqa: E402
from virnucflow.samples import read_sample_sheet  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")

try:
    SAMPLES = {s.name: s for s in read_sample_sheet(config["samples"])}
except VirNucFlowError as exc:
    raise WorkflowError(str(exc)) from None

for s in SAMPLES.values():
    validate({"sample": s.name, "fasta": s.fasta}, schema="../schemas/samples.schema.yaml")

_classifier = config["models"]["classifier"]
if _classifier in CLASSIFIER_NAMES and not CLASSIFIER_NAMES[_classifier].startswith(str(config["chunk_length"])):
    raise WorkflowError(
        f"chunk_length {config['chunk_length']} does not match the classifier {_classifier} "
        f"(trained on {CLASSIFIER_NAMES[_classifier].split('_')[0]} bp windows); "
        f"use virnucpro-{config['chunk_length']} or chunk_length {CLASSIFIER_NAMES[_classifier].split('_')[0]}"
    )


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "NONE",


scattergather:
    embed=config["shards"],


ENV = "../../envs/virnucflow.yaml"
EMBEDDING_MODELS = {"dnabert_s": "DNABERT-S", "esm2": "ESM-2"}  # rule embed_<key>, results/*/embeddings/<key>/
DEMO_MODELS = {
    "esm2": "resources/demo_models/esm2_demo.pt",
    "dnabert_s": "resources/demo_models/dnabert_s_demo",
    "classifier": "resources/demo_models/virnucpro_demo.pth",
}


def sample_fasta(wildcards):
    return SAMPLES[wildcards.sample].fasta


def model_files(wildcards):
    """Configured model paths that exist or that the demo rule builds (known names are
    resolved, fetched and validated by check_models itself)."""
    files = {}
    for kind, spec in config["models"].items():
        if kind == "download" or known_kind(str(spec)):
            continue
        if spec == DEMO_MODELS[kind] or Path(spec).exists():
            files[kind] = spec
    return files


def embedding_options(model):
    """The embedding section for one model: shared keys, its own overrides, emergency env overrides."""
    try:
        options = model_options(config["embedding"], model)
    except VirNucFlowError as exc:
        raise WorkflowError(str(exc)) from None
    shared = config["embedding"]["precision"]
    if options["precision"] != (config["embedding"].get(model) or {}).get("precision", shared):
        logger.warning(f"{model}: precision {options['precision']} from the environment ({ENV_PRECISION}/{ENV_DISABLE_FP16})")
    return options


def shard_files(kind):
    """Per-shard files of both models, model by model: (model names, paths) for the gate."""
    pattern = {
        "h5": "results/{{sample}}/embeddings/{model}/{scatteritem}.h5",
        "nonfinite": "results/{{sample}}/qc/nonfinite/{model}/{scatteritem}.tsv",
    }[kind]
    return [f for model in EMBEDDING_MODELS for f in gather.embed(pattern.replace("{model}", model))]


def shard_models():
    return [model for model in EMBEDDING_MODELS for _ in gather.embed("{scatteritem}")]


def final_outputs():
    outs = []
    for name in SAMPLES:
        outs += expand(
            "results/{sample}/{file}",
            sample=name,
            file=["prediction_results.txt", "prediction_results_highestscore.csv", "summary.tsv"],
        )
        if config["output"]["merged_pt"]:
            outs.append(f"results/{name}/{name}_merged.pt")
    return outs
