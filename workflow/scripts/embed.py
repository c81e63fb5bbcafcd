"""Rules embed_dnabert / embed_esm: one shard, one model, one GPU (virnucflow.engine)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from virnucflow.cli import run_rule  # noqa: E402

from virnucflow.gpu import claim_gpu  # noqa: E402

claim_gpu()  # local multi-GPU runs: take a free GPU (SLURM already set CUDA_VISIBLE_DEVICES)
model = {"embed_dnabert": "dnabert_s", "embed_esm": "esm2"}[snakemake.rule]
run_rule(
    ["embed", "--model", model, "--models-json", snakemake.input.models, "--shard", snakemake.input.shard,
     "--out", snakemake.output.h5, "--threads", snakemake.threads, *snakemake.params.options],
    snakemake.log[0],
)
