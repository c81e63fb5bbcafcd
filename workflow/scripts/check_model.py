"""Rule check_model: resolve, fetch and validate one model (virnucflow.models.manifest)."""
from virnucflow.models.manifest import check_model
from virnucflow.models.registry import names
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    kind = snakemake.wildcards.model
    others = {k: snakemake.input[k] for k in names()} if kind == "classifier" else None
    check_model(kind, snakemake.params.spec, snakemake.output.manifest, allow_download=snakemake.params.download,
                others=others)
