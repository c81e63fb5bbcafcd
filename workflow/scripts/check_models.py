"""Rule check_models: resolve, fetch and validate the models (virnucflow.models.acquire)."""
from virnucflow.models.acquire import check_models
from virnucflow.step import rule_step

with rule_step(snakemake):
    check_models(snakemake.params.models, snakemake.output.manifest)
