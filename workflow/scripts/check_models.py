"""Rule check_models: resolve, fetch and validate the models (virnucflow.models.acquire)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

p = snakemake.params
run_rule(
    ["check-models", "--esm2", p.esm2, "--dnabert-s", p.dnabert_s, "--classifier", p.classifier,
     "--download", p.download, "--out", snakemake.output.manifest],
    snakemake.log[0],
)
