"""Rule preprocess: windows, six frames, ORF filter (virnucflow.preprocess)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

out = snakemake.output
run_rule(
    ["preprocess", "--fasta", snakemake.input.fasta, "--chunk-length", snakemake.params.chunk_length,
     "--chunked", out.chunked, "--nucleotide", out.nucleotide, "--protein", out.protein, "--records", out.records],
    snakemake.log[0],
)
