"""Rule export_merged_pt: the original's _merged.pt feature file (virnucflow.features)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

run_rule(["export-merged-pt", "--features", snakemake.input.features, "--out", snakemake.output.pt], snakemake.log[0])
