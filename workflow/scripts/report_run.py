"""Rule report_run: inputs, embedding jobs and time per rule (virnucflow.steps.report)."""
from virnucflow.steps.report import run_tables
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    inputs = snakemake.params.inputs
    samples = list(inputs)
    run_tables(
        snakemake.input.info, snakemake.params.benchmarks, snakemake.output.jobs, snakemake.output.times,
        times_tsv=snakemake.output.times_tsv, inputs_tsv=snakemake.output.inputs, inputs=inputs,
        records_tsvs=dict(zip(samples, snakemake.input.records)), sources=dict(zip(samples, snakemake.input.sources)),
        batches=snakemake.params.batches,
    )
