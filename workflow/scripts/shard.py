"""Rule shard: token-balanced shards of a sample's frames (virnucflow.shard)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

run_rule(
    ["shard", "--nucleotide", snakemake.input.nucleotide, "--protein", snakemake.input.protein, "--out", *snakemake.output],
    snakemake.log[0],
)
