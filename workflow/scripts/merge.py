"""Rule merge: join per-shard embeddings by ID into features.h5 (virnucflow.features)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

run_rule(
    ["merge", "--dnabert", *snakemake.input.dnabert, "--esm", *snakemake.input.esm, "--out", snakemake.output.features,
     "--attrs", json.dumps({"chunk_length": snakemake.params.chunk_length, "sample": snakemake.wildcards.sample})],
    snakemake.log[0],
)
