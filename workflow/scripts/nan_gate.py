"""Rule nan_gate: what a batch's embedding jobs recomputed in FP32, checked before its calls (virnucflow.steps.nan_gate)."""
from virnucflow.steps.nan_gate import nan_gate
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    nan_gate(snakemake.params.models, snakemake.input.info, snakemake.input.nonfinite, snakemake.output.table,
             snakemake.params.max_fraction)
