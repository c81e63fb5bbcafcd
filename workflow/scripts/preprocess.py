"""Rule preprocess: windows, six frames, ORF filter (virnucflow.steps.preprocess)."""
from virnucflow.steps.preprocess import preprocess
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    out = snakemake.output
    preprocess(snakemake.input.fasta, snakemake.params.chunk_length,
               out.get("chunked"), out.nucleotide, out.protein, out.records, out.source,
               mate2=snakemake.input.get("mate2") or None, threads=snakemake.threads)
