"""Rule models_manifest: the models' manifests in one file, for fp32_compare (virnucflow.models.manifest)."""
from virnucflow.models.manifest import combine_manifests
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    combine_manifests(snakemake.input, snakemake.output.manifest)
