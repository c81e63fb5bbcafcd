"""Rule export_merged_pt: the original's _merged.pt feature file (virnucflow.io.features)."""
from virnucflow.io.features import export_merged_pt, read_h5
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    export_merged_pt(read_h5(snakemake.input.features, dataset="features"), snakemake.output.pt)
