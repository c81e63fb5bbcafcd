"""Rule report_sample: the per-sample figure of the report (virnucflow.steps.report)."""
from virnucflow.steps.report import sample_figures
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    sample_figures(snakemake.input.summary, snakemake.wildcards.sample, snakemake.output.png)
