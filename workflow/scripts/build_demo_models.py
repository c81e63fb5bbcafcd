"""Rule build_demo_models: tiny random models in the real formats (virnucflow.steps.demo)."""
from virnucflow.steps.demo import build_demo_models
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    build_demo_models(dict(snakemake.output.items()), seed=snakemake.params.seed)
