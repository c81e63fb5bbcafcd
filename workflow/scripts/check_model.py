"""Rule check_model: resolve, fetch and validate one model (virnucflow.checks)."""
from virnucflow.checks import check_model
from virnucflow.step import rule_step

with rule_step(snakemake):
    kind = snakemake.wildcards.model
    others = {k: snakemake.input[k] for k in ("esm2", "dnabert_s")} if kind == "classifier" else None
    check_model(kind, snakemake.params.spec, snakemake.output.manifest, allow_download=snakemake.params.download,
                others=others)
