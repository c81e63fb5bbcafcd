"""Resources derived from the work: an embedding job's time limit from its shard's tokens."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from virnucflow.config import schema_defaults
from virnucflow.resources import (THROUGHPUT, embed_runtime, frame_tokens, rule_resources, shard_tokens)
from virnucflow.shard import SHARD_HEADER, frame_cost

from .conftest import REPO


def _shard(path, rows):
    path.write_text(SHARD_HEADER + "".join(f"{i}\tf{i}_chunk_1F1\t{'A' * n}\t{'M' * p}\n" for i, (n, p) in enumerate(rows)))
    return path


def test_frame_tokens_are_the_shard_balancing_estimate():
    assert frame_tokens("esm2", 498, 166) == 168
    assert frame_tokens("dnabert_s", 498, 166) == 127  # ceil(498 / 4) + 2
    assert frame_tokens("esm2", 498, 166) + frame_tokens("dnabert_s", 498, 166) == frame_cost(498, 166)
    with pytest.raises(ValueError):
        frame_tokens("toy", 1, 1)


def test_shard_tokens_counts_each_models_tokens(tmp_path):
    shard = _shard(tmp_path / "1-of-2.tsv", [(498, 166), (300, 100), (9, 3)])
    assert shard_tokens(shard, "esm2") == 168 + 102 + 5
    assert shard_tokens(shard, "dnabert_s") == 127 + 77 + 5
    _shard(shard, [(498, 166)])  # a new version of the file is read again
    assert shard_tokens(shard, "esm2") == 168


def test_embed_runtime_exact_minutes():
    # 300,000 frames of 500 bp windows (shard_frames): ESM-2 (180 s + 4 x 50.4M / 95,000 tokens/s) / 60 = 38.4
    assert embed_runtime("embed_esm2", 300_000 * 168) == 39
    assert embed_runtime("embed_esm2", 300_000 * 168, attempt=2) == 78
    assert embed_runtime("embed_esm2", 2_000_000 * 168) == 239
    # DNABERT-S: (60 s + 4 x 38.1M / 1.5M tokens/s) / 60 = 2.7, the floor
    assert embed_runtime("embed_dnabert_s", 300_000 * 127) == 10
    assert embed_runtime("embed_dnabert_s", 10_000_000 * 127) == 58
    # a tiny shard: the floor, times the attempt
    assert embed_runtime("embed_esm2", 504) == 15
    assert embed_runtime("embed_esm2", 504, attempt=3) == 45


def _config(**resources):
    config = schema_defaults()
    for rule, spec in resources.items():
        config["resources"][rule].update(spec)
    return config


def test_runtime_auto_is_derived_from_the_jobs_shard(tmp_path):
    shard = _shard(tmp_path / "s.tsv", [(498, 166)] * 300_000)
    job = SimpleNamespace(shard=str(shard), models="results/models/esm2.json")
    for rule, minutes in (("embed_esm2", 39), ("embed_dnabert_s", 10)):
        runtime = rule_resources(_config(), rule)["runtime"]
        assert callable(runtime)
        assert runtime({}, input=job, attempt=1) == minutes
        assert runtime({}, input=job, attempt=2) == 2 * minutes


def test_a_configured_runtime_wins():
    config = _config(embed_esm2={"runtime": 600})
    assert rule_resources(config, "embed_esm2") == {"mem_mb": 48000, "runtime": 600, "gpu": 1}
    assert callable(rule_resources(config, "embed_dnabert_s")["runtime"])


def test_runtime_auto_only_where_it_is_derived():
    with pytest.raises(ValueError, match="resources.merge.runtime: auto is only for embed_esm2, embed_dnabert_s"):
        rule_resources(_config(merge={"runtime": "auto"}), "merge")
    assert set(THROUGHPUT) == {"embed_esm2", "embed_dnabert_s"}


def test_schema_refuses_auto_for_other_rules(tmp_path):
    (tmp_path / "c.yaml").write_text("resources: {merge: {runtime: auto}}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--configfile",
                          str(REPO / "config" / "demo.yaml"), str(tmp_path / "c.yaml"), "-d", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "resources" in out and "merge" in out and "auto" in out, out[-2000:]
