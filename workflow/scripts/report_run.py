"""Rule report_run: embedding jobs table and wall time per rule (virnucflow.report)."""
from virnucflow.report import run_tables
from virnucflow.step import rule_step

with rule_step(snakemake):
    run_tables(snakemake.input.embeddings, snakemake.params.benchmarks, snakemake.output.jobs, snakemake.output.times)
