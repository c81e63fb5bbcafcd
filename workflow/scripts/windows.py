"""Rule windows: BED and TSV window tracks (virnucflow.tracks)."""
from virnucflow.predict import read_predictions
from virnucflow.step import rule_step
from virnucflow.tracks import write_window_tracks

with rule_step(snakemake):
    write_window_tracks(snakemake.input.records, read_predictions(snakemake.input.predictions),
                        snakemake.params.chunk_length, snakemake.output.bed, snakemake.output.tsv)
