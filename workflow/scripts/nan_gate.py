"""Rule nan_gate: what the embedding jobs recomputed in FP32, checked before the merge (virnucflow.nan_gate)."""
from virnucflow.nan_gate import nan_gate
from virnucflow.step import rule_step

with rule_step(snakemake):
    nan_gate(snakemake.params.model, snakemake.input.embeddings, snakemake.input.nonfinite,
             snakemake.output.table, snakemake.params.max_fraction)
