# Helpers for the rules: configuration, sample sheet, model inputs, targets.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The rules call the installed virnucflow package (pip install virnucflow, or -e . in a checkout).
from virnucflow.planning.checks import (
    check_config_values,
    check_rule_settings,
    classifier_chunk_length,
    config_error,
)
from virnucflow.planning.config import embedding_options
from virnucflow.planning.config import schema as config_schema
from virnucflow.planning.config import schema_file as config_schema_file
from virnucflow.planning.step import one_line
from virnucflow.errors import VirNucFlowError
from virnucflow.planning.batches import plan_batches
from virnucflow.planning.inputs import input_info
from virnucflow.models.registry import (
    CLASSIFIER_BATCH,
    CLASSIFIER_DEMO,
    embedding_models,
    known_kind,
    model_kinds,
)
from virnucflow.steps.calling import resolve_calling
from virnucflow.planning.resources import rule_resources, rule_threads
from virnucflow.io.samples import read_sample_sheet
from virnucflow.steps.shard import shard_names

try:
    check_rule_settings(
        {
            "--set-resources": workflow.resource_settings.overwrite_resources,
            "--set-threads": workflow.resource_settings.overwrite_threads,
        },
        config_schema()["properties"]["resources"]["properties"],
    )
    validate(config, schema=config_schema_file())
    check_config_values(config, config_schema())
    SAMPLES = {s.name: s for s in read_sample_sheet(config["samples"])}
    classifier_chunk_length(
        config["models"]["classifier"],
        config["models"]["classifier_chunk_length"],
        config["chunk_length"],
    )
    for s in SAMPLES.values():
        validate(
            {
                "sample": s.name,
                "fasta": s.fasta,
                **({"mate2": s.mate2} if s.mate2 else {}),
            },
            schema="../schemas/samples.schema.yaml",
        )
except VirNucFlowError as exc:  # one line, exit status 1, no traceback
    raise SystemExit(one_line(exc))
except WorkflowError as exc:  # one line naming the key, not the schema dump
    raise SystemExit(f"virnucflow: error: {config_error(exc, config_schema())}")

# Each embedding model's options (shared keys, its own, the environment's emergency override), once.
try:
    EMBEDDING_OPTIONS, _notes = embedding_options(config["embedding"])
except VirNucFlowError as exc:
    raise SystemExit(one_line(exc))
for _note in _notes:
    logger.warning(_note)

# Size, content hash and frame count (up to the limit) of every input, cached in
# .snakemake/virnucflow/inputs.json; then the batches: which samples share
# embedding jobs, and how many shards each batch has (virnucflow.planning.batches).
_SHARDS = workflow.resource_settings.overwrite_scatter.get("embed", config["shards"])
_limit = (
    config["shard_frames"] * config["max_shards"]
    if _SHARDS == "auto"
    else int(_SHARDS) * CLASSIFIER_BATCH
)
INPUTS = {
    name: input_info(s.fasta, config["chunk_length"], limit=_limit)
    for name, s in SAMPLES.items()
}
MATES = {
    name: input_info(s.mate2, config["chunk_length"], limit=_limit)
    for name, s in SAMPLES.items()
    if s.mate2
}


def _frames(name):
    """Frames of a sample (both mates of paired reads); None when a file is unreadable."""
    counts = [
        i and i["frames"]
        for i in [INPUTS[name]] + ([MATES[name]] if name in MATES else [])
    ]
    return None if None in counts else sum(counts)


BATCHES = plan_batches(
    {name: _frames(name) for name in SAMPLES},
    _SHARDS,
    config["shard_frames"],
    config["max_shards"],
)
BATCH_OF = {sample: b.name for b in BATCHES.values() for sample in b.samples}
for _b in BATCHES.values():
    if _SHARDS != "auto" and _b.shards < int(_SHARDS):
        logger.warning(
            f"virnucflow: {_SHARDS} embedding shards requested but sample {_b.name} has {_b.frames} frames, "
            f"{_b.shards} batch(es) of {CLASSIFIER_BATCH} (shards are cut at whole classifier batches); "
            f"using {_b.shards} shard(s)"
        )


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "NONE",
    batch="|".join(map(re.escape, BATCHES)) if BATCHES else "NONE",
    shard=r"[0-9]+-of-[0-9]+",


ENV = "../../envs/virnucflow.yaml"
# name -> label, in the classifier's feature order (virnucflow.models.registry)
EMBEDDING_MODELS = {spec.name: spec.label for spec in embedding_models()}
MODEL_KINDS = model_kinds()
DEMO_MODELS = {
    **{spec.name: spec.demo for spec in embedding_models()},
    "classifier": CLASSIFIER_DEMO,
}
DEMO_OUTPUTS = {
    **{
        spec.name: directory(spec.demo) if spec.demo_is_dir else spec.demo
        for spec in embedding_models()
    },
    "classifier": CLASSIFIER_DEMO,
}


def sample_fasta(wildcards):
    return SAMPLES[wildcards.sample].fasta


def model_file(wildcards):
    """The configured model path if it exists or the demo rule builds it (known names
    are resolved, fetched and validated by check_model itself)."""
    spec = config["models"][wildcards.model]
    if known_kind(str(spec)) or not (
        spec == DEMO_MODELS[wildcards.model] or Path(spec).exists()
    ):
        return {}
    return {"model": spec}


def model_manifests(wildcards):
    """The classifier's check also reads the embedding models' widths."""
    if wildcards.model != "classifier":
        return {}
    return {kind: f"results/models/{kind}.json" for kind in EMBEDDING_MODELS}


def model_spec(wildcards):
    return config["models"][wildcards.model]


def fasta_fingerprint(wildcards):
    """Size and hash of the sample's input (both mates of paired reads): a changed file reruns
    preprocessing even if older."""

    def fingerprint(info):
        return (
            f"{info['size']} bytes, blake2b {info['blake2b']}" if info else "unreadable"
        )

    text = fingerprint(INPUTS[wildcards.sample])
    if wildcards.sample in MATES:
        text += f"; mate2 {fingerprint(MATES[wildcards.sample])}"
    return text


def sample_mate2(wildcards):
    return SAMPLES[wildcards.sample].mate2 or []


def calling_params(wildcards):
    return resolve_calling(config["calling"])


def batch_shards(batch):
    return shard_names(BATCHES[batch].shards)


def batch_files(wildcards):
    """The identified files of the batch's samples, the embedding jobs' frames."""
    return {
        "nucleotide": [
            f"results/{s}/preprocess/identified_nucleotide.fa"
            for s in BATCHES[wildcards.batch].samples
        ],
        "protein": [
            f"results/{s}/preprocess/identified_protein.faa"
            for s in BATCHES[wildcards.batch].samples
        ],
    }


def keep_embeddings():
    out = config["output"]
    return out["embeddings"] or out["features"] or out["merged_pt"]


def embedding_output(model):
    """A shard's embedding file: intermediate (removed once the shard is scored) unless kept."""
    path = f"results/batches/{{batch}}/embeddings/{model}/{{shard}}.h5"
    return path if keep_embeddings() else temp(path)


def all_embedding_infos():
    return [
        f"results/batches/{b}/embed/{shard}.json"
        for b in BATCHES
        for shard in batch_shards(b)
    ]


def batch_outputs(pattern, key="batch"):
    """``pattern`` ({batch}, {shard}, {model}) for every shard of a batch, model by model: an input function."""

    def files(wildcards):
        batch = (
            getattr(wildcards, key) if key == "batch" else BATCH_OF[wildcards.sample]
        )
        return [
            pattern.format(batch=batch, shard=shard, model=model)
            for model in (EMBEDDING_MODELS if "{model}" in pattern else [None])
            for shard in batch_shards(batch)
        ]

    return files


def sample_batch_outputs(pattern):
    """``pattern`` for every shard of the sample's batch: an input function."""
    return batch_outputs(pattern, key="sample")


def final_outputs():
    outs = ["results/run/embedding_jobs.tsv", "results/run/rule_times.png"]
    for name in SAMPLES:
        outs += expand(
            "results/{sample}/{file}",
            sample=name,
            file=[
                "prediction_results.txt",
                "prediction_results_highestscore.csv",
                "summary.tsv",
                "windows.bed",
                "windows.tsv",
                "report/calls.png",
            ],
        )
        if config["output"]["features"]:
            outs.append(f"results/{name}/features.h5")
        if config["output"]["merged_pt"]:
            outs.append(f"results/{name}/{name}_merged.pt")
    return outs
