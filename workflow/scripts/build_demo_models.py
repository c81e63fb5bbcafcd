"""Rule build_demo_models: tiny random models in the real formats (virnucflow.demo)."""
from virnucflow.demo import build_demo_models
from virnucflow.step import rule_step

with rule_step(snakemake):
    out = snakemake.output
    build_demo_models(out.esm2, out.dnabert_s, out.classifier, seed=snakemake.params.seed)
