"""Rule predict: classifier scores, per-window calls, per-sequence summary (virnucflow.predict)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

out = snakemake.output
run_rule(
    ["predict", "--features", snakemake.input.features, "--models-json", snakemake.input.models,
     "--records", snakemake.input.records, "--predictions", out.predictions, "--highest", out.highest,
     "--summary", out.summary],
    snakemake.log[0],
)
