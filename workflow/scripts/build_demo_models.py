"""Rule build_demo_models: tiny random models in the real formats (virnucflow.demo)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

out = snakemake.output
run_rule(
    ["build-demo-models", "--esm2", out.esm2, "--dnabert-s", out.dnabert_s, "--classifier", out.classifier,
     "--seed", snakemake.params.seed],
    snakemake.log[0],
)
