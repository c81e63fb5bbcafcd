"""Resources derived from the work: an embedding job's time limit from its shard's tokens."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from virnucflow.planning.config import schema_defaults
from virnucflow.models.registry import names
from virnucflow.planning.resources import (embed_runtime, frame_tokens, rule_resources, shard_tokens)
from virnucflow.steps.shard import frame_cost

from .conftest import REPO


def _plan(tmp_path, rows, shards=1, name="plan.tsv"):
    """A one-sample batch's plan over identified frames of (nucleotide, protein) lengths."""
    from virnucflow.steps.shard import plan_shards

    nt, aa = tmp_path / "n.fa", tmp_path / "p.faa"
    nt.write_text("".join(f">f{i}_chunk_1F1\n{'A' * n}\n" for i, (n, _) in enumerate(rows)))
    aa.write_text("".join(f">f{i}_chunk_1F1\n{'M' * p}\n" for i, (_, p) in enumerate(rows)))
    plan_shards(["s"], {"s": (nt, aa)}, shards, tmp_path / name)
    return tmp_path / name


def test_frame_tokens_are_the_shard_balancing_estimate():
    assert frame_tokens("esm2", 498, 166) == 168
    assert frame_tokens("dnabert_s", 498, 166) == 127  # ceil(498 / 4) + 2
    assert frame_tokens("esm2", 498, 166) + frame_tokens("dnabert_s", 498, 166) == frame_cost(498, 166)
    with pytest.raises(ValueError):
        frame_tokens("toy", 1, 1)


def test_shard_tokens_counts_each_models_tokens(tmp_path):
    plan = _plan(tmp_path, [(498, 166), (300, 100), (9, 3)])
    assert shard_tokens(plan, "1-of-1") == {"esm2": 168 + 102 + 5, "dnabert_s": 127 + 77 + 5}
    _plan(tmp_path, [(498, 166)])  # a new version of the plan is read again
    assert shard_tokens(plan, "1-of-1") == {"esm2": 168, "dnabert_s": 127}


def test_embed_runtime_exact_minutes():
    # 300,000 frames of 500 bp windows (shard_frames), both models in one job:
    # (180 s + 4 x 50.4M / 95,000 tokens/s  +  60 s + 4 x 38.1M / 1.5M tokens/s) / 60 = 41.06
    both = {"esm2": 300_000 * 168, "dnabert_s": 300_000 * 127}
    assert embed_runtime(both) == 42
    assert embed_runtime(both, attempt=2) == 84
    assert embed_runtime({"esm2": 2_000_000 * 168, "dnabert_s": 2_000_000 * 127}) == 252
    # DNABERT-S alone: (60 s + 4 x 38.1M / 1.5M tokens/s) / 60 = 2.7, the floor
    assert embed_runtime({"dnabert_s": 300_000 * 127}) == 15
    assert embed_runtime({"dnabert_s": 10_000_000 * 127}) == 58
    # a tiny shard: the floor, times the attempt
    assert embed_runtime({"esm2": 504, "dnabert_s": 381}) == 15
    assert embed_runtime({"esm2": 504, "dnabert_s": 381}, attempt=3) == 45


def _config(**resources):
    config = schema_defaults()
    for rule, spec in resources.items():
        config["resources"][rule].update(spec)
    return config


def test_runtime_auto_is_derived_from_the_jobs_shard(tmp_path):
    plan = _plan(tmp_path, [(498, 166)] * 300_000, shards=2)
    job = SimpleNamespace(plan=str(plan), esm2_model="results/models/esm2.json")
    runtime = rule_resources(_config(), "embed")["runtime"]
    assert callable(runtime)
    # the cut nearest 150,000 frames at a whole number of 4,096-frame batches: 37 of them (151,552)
    tokens = shard_tokens(plan, "1-of-2")
    assert tokens["esm2"] == 168 * 151_552 and tokens["dnabert_s"] == 127 * 151_552
    assert runtime(SimpleNamespace(shard="1-of-2"), input=job, attempt=1) == embed_runtime(tokens) == 23  # (180 + 4 x 25.5M / 95,000 + 60 + 4 x 19.2M / 1.5M) / 60 = 22.7
    assert runtime(SimpleNamespace(shard="1-of-2"), input=job, attempt=2) == 46


def test_a_configured_runtime_wins():
    assert callable(rule_resources(_config(), "embed")["runtime"])
    config = _config(embed={"runtime": 600})
    assert rule_resources(config, "embed") == {"mem_mb": 48000, "runtime": 600, "gpu": 1}


def test_runtime_auto_only_where_it_is_derived():
    with pytest.raises(ValueError, match="resources.merge.runtime: auto is only for embed; give minutes"):
        rule_resources(_config(merge={"runtime": "auto"}), "merge")
    assert set(names()) == {"esm2", "dnabert_s"}


@pytest.mark.parametrize("overlay, expected", [
    ("resources: {merge: {runtime: auto}}\n", ["resources", "merge", "auto"]),
    ("resources: {predict: {mem_mb: auto}}\n", ["config key resources.predict.mem_mb: 'auto' is not of type 'integer'"]),
])
def test_schema_refuses_auto_where_it_is_not_derived(tmp_path, overlay, expected):
    (tmp_path / "c.yaml").write_text(overlay)
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--configfile",
                          str(REPO / "config" / "demo.yaml"), str(tmp_path / "c.yaml"), "-d", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert all(text in out for text in expected), out[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--set-resources", "embed_esm2:mem_mb=64000"],
     "--set-resources embed_esm2: there is no rule embed_esm2; did you mean --set-resources embed:KEY=VALUE?"),
    (["--set-threads", "embed_dnabert_s=8"],
     "--set-threads embed_dnabert_s: there is no rule embed_dnabert_s; did you mean --set-threads embed=N?"),
    (["--config", "resources={embed_esm2: {mem_mb: 64000}}"],
     "config key resources.embed_esm2: unknown key; did you mean embed?"),
])
def test_settings_for_the_former_per_model_rules_are_refused(tmp_path, args, message):
    """Snakemake ignores --set-resources for a rule it does not know: an unknown rule (here the former
    per-model rules) must not be dropped silently."""
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--configfile",
                          str(REPO / "config" / "demo.yaml"), "-d", str(tmp_path), *args],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr, (res.stdout + res.stderr)[-2000:]


def test_every_demo_job_fits_a_two_core_node():
    """config/demo.yaml runs on a laptop or a 2-core SLURM test node (the README's cluster walk-through):
    a default sized for real samples (preprocess and predict ask for 4 cores) must be lowered there,
    or SLURM refuses the job."""
    import yaml
    from snakemake.utils import validate

    from virnucflow.planning.resources import rule_threads

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for key, value in demo.items():  # --configfile merges nested dicts key by key
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    threads = {rule: rule_threads(config, rule) for rule in config["resources"]}
    assert max(threads.values()) <= 2, threads
    assert threads["preprocess"] == threads["score"] == 1


def test_mem_mb_auto_is_derived_from_the_jobs_inputs(tmp_path):
    """merge and export_merged_pt (output.features, output.merged_pt) hold a sample's vectors: their memory
    follows its size (a fixed limit gets a large sample's job killed by SLURM) and grows with the attempt.
    predict streams the sample in blocks: a fixed, small limit."""
    files = []
    for name, size in (("a.h5", 400_000_000), ("b.h5", 1_200_000_000), ("records.tsv", 1_000_000)):
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)  # sparse: the size is what counts
        files.append(str(tmp_path / name))
    config = _config()
    assert {rule: rule_resources(config, rule)["mem_mb"]({}, input=files, attempt=1)
            for rule in ("merge", "export_merged_pt")} == {
        "merge": 1000 + 4003, "export_merged_pt": 1000 + 4003}  # ceil(1000 + f x 1,601 MB)
    assert rule_resources(config, "merge")["mem_mb"]({}, input=files, attempt=2) == 2 * 5003
    assert rule_resources(config, "predict")["mem_mb"] == 2000
    assert rule_resources(_config(merge={"mem_mb": 64000}), "merge")["mem_mb"] == 64000
    with pytest.raises(ValueError, match="resources.predict.mem_mb: auto is only for merge, export_merged_pt"):
        rule_resources(_config(predict={"mem_mb": "auto"}), "predict")
