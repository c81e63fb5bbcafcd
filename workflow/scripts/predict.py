"""Rule predict: classifier scores, per-window calls, per-sequence summary (virnucflow.predict)."""
from virnucflow.predict import predict_sample
from virnucflow.step import rule_step

with rule_step(snakemake):
    out = snakemake.output
    predict_sample(snakemake.input.dnabert_s, snakemake.input.esm2, snakemake.input.models, snakemake.input.records,
                   out.predictions, out.highest, out.summary, **snakemake.params.calling)
