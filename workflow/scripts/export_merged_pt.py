"""Rule export_merged_pt: the original's _merged.pt feature file (virnucflow.features)."""
from virnucflow.features import export_merged_pt, read_h5
from virnucflow.step import rule_step

with rule_step(snakemake):
    export_merged_pt(read_h5(snakemake.input.features, dataset="features"), snakemake.output.pt)
