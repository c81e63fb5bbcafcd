"""The Snakemake workflow end to end (demo models, CPU), run from another directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from .conftest import ORIGINAL, REFERENCE, REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, config: list[str] | None = None,
              configfiles: list[Path] = ()) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
                       "--configfile", str(REPO / "config" / "demo.yaml"), *map(str, configfiles)]
    if config:
        cmd += ["--config", *config]
    return subprocess.run(cmd + list(args), capture_output=True, text=True)


def _sheet(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("sample\tfasta\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    return path


def _l300(workdir: Path) -> Path:
    """The demo classifier is a path: at chunk length 300 its window length must be said too."""
    p = workdir / "l300.yaml"
    p.write_text("models:\n  classifier_chunk_length: 300\n")
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One end-to-end run at chunk length 300 on two small samples, one gzipped."""
    wd = tmp_path_factory.mktemp("wd")
    sheet = _sheet(wd / "samples.tsv", [("strands", str(ORIGINAL / "both_strands.fa")),
                                        ("lower", str(ORIGINAL / "lowercase.fa.gz"))])
    res = snakemake(wd, config=[f"samples={sheet}", "chunk_length=300", "shards=2"], configfiles=[_l300(wd)])
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def test_preprocessing_outputs_are_the_originals(run):
    for sample, name in (("strands", "both_strands"), ("lower", "lowercase")):
        pre = run / "results" / sample / "preprocess"
        assert (pre / "chunked.fa").read_bytes() == (ORIGINAL / f"{name}.L300.chunked.fa").read_bytes()
        assert (pre / "identified_nucleotide.fa").read_bytes() == (ORIGINAL / f"{name}.L300.identified_nucleotide.fa").read_bytes()
        assert (pre / "identified_protein.faa").read_bytes() == (ORIGINAL / f"{name}.L300.identified_protein.faa").read_bytes()


def test_prediction_outputs(run):
    res = run / "results" / "strands"
    frames = [line[1:].strip() for line in (res / "preprocess" / "identified_protein.faa").read_text().splitlines()
              if line.startswith(">")]
    lines = (res / "prediction_results.txt").read_text().splitlines()
    assert lines[0].startswith("# DEMO MODELS")
    assert lines[1] == "Sequence_ID\tPrediction\tscore1\tscore2"
    rows = [line.split("\t") for line in lines[2:]]
    assert [r[0] for r in rows] == frames  # every frame once, in input order
    for _, call, s1, s2 in rows:
        assert call == ("virus" if float(s2) > float(s1) else "others")
        assert abs(float(s1) + float(s2) - 1) < 1e-6
    windows = (res / "prediction_results_highestscore.csv").read_text().splitlines()
    assert windows[1] == "Modified_ID\tIs_Virus"
    assert [w.split("\t")[0] for w in windows[2:]] == sorted({f[:-2] for f in frames})
    summary = (res / "summary.tsv").read_text().splitlines()
    records = [line[1:].split()[0] for line in (ORIGINAL / "both_strands.fa").read_text().splitlines() if line.startswith(">")]
    assert [s.split("\t")[0] for s in summary[2:]] == records


def test_features_and_exports(run):
    with h5py.File(run / "results" / "strands" / "features.h5") as h5:
        assert h5["features"].shape[1] == 48 + 32  # demo DNABERT-S + demo ESM-2
        assert bool(h5.attrs["demo_models"]) is True
        assert h5.attrs["chunk_length"] == 300
        ids = [i.decode() for i in h5["ids"][()]]
    merged = torch.load(run / "results" / "strands" / "strands_merged.pt", weights_only=True)
    assert merged["ids"] == ids and merged["data"].shape == (len(ids), 80)
    # shards are cut at whole 4,096-frame classifier batches: these small samples get one shard each
    shards = sorted((run / "results" / "batches" / "strands" / "embeddings" / "esm2").glob("*.h5"))
    assert [p.name for p in shards] == ["1-of-1.h5"]  # kept: output.features needs them
    log = (run / "logs" / "batches" / "strands" / "embed" / "1-of-1.log").read_text()  # one job per shard, both models
    assert "INFO dnabert_s batch strands shard 1-of-1: " in log and "INFO esm2 batch strands shard 1-of-1: " in log
    assert (run / "logs" / "benchmarks" / "strands" / "preprocess.tsv").is_file()


def test_rerun_has_nothing_to_do(run):
    res = snakemake(run, "-n", config=[f"samples={run / 'samples.tsv'}", "chunk_length=300", "shards=2"],
                    configfiles=[_l300(run)])
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def _coding_fasta(path: Path, records: int, length: int = 1500, seed: int = 0) -> Path:
    """Random coding sequence of sense codons (most windows keep a frame or more)."""
    import numpy as np

    from workloads.frames import SENSE

    rng = np.random.default_rng(seed)
    path.write_text("".join(f">c{i}\n{''.join(rng.choice(SENSE, length // 3))}\n" for i in range(records)))
    return path


def test_shard_count_from_the_command_line(run):
    big = _coding_fasta(run / "big.fa", 6000)  # > 4 x 4,096 frames
    sheet = _sheet(run / "s5.tsv", [("big", str(big)), ("strands", str(ORIGINAL / "both_strands.fa"))])
    res = snakemake(run, "-n", "--set-scatter", "embed=5", config=[f"samples={sheet}", "chunk_length=300"],
                    configfiles=[_l300(run)])
    assert res.returncode == 0, res.stderr
    table = res.stdout + res.stderr
    # big: 5 new shards; strands: 1 (capped), the fixture's, already done
    assert any(line.split() == ["embed", "5"] for line in table.splitlines()), table[-3000:]
    assert ("virnucflow: 5 embedding shards requested but sample strands has" in table
            and "using 1 shard(s)" in table), table[-3000:]


def test_lint_is_clean():
    res = subprocess.run(SNAKEMAKE + ["--lint", "--configfile", str(REPO / "config" / "demo.yaml")], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


@pytest.mark.parametrize(
    "rows,message",
    [
        ([("a", "x.fa"), ("a", "y.fa")], "sample 'a' is listed twice (lines 2 and 3)"),
        ([("bad name", "x.fa")], "line 2: sample name 'bad name' must be a plain file name: letters, digits, '_', "
                                 "'.' and '-', starting with a letter or digit"),
        ([("a", "missing.fa")], "line 2: sample 'a': FASTA file missing.fa not found"),
    ],
)
def test_sample_sheet_errors(tmp_path, rows, message):
    (tmp_path / "x.fa").write_text(">r\nACGT\n")
    (tmp_path / "y.fa").write_text(">r\nACGT\n")
    sheet = _sheet(tmp_path / "s.tsv", rows)
    res = snakemake(tmp_path, config=["samples=s.tsv"])
    assert res.returncode != 0
    assert f"{sheet.name}: {message}" in res.stderr
    assert not (tmp_path / "results").exists()


def test_bad_fasta_fails_its_job_with_one_clear_line(tmp_path):
    (tmp_path / "bad.fa").write_text(">r1\nACGT\n>r1\nACGT\n")
    _sheet(tmp_path / "s.tsv", [("dup", "bad.fa")])
    res = snakemake(tmp_path, config=["samples=s.tsv"])
    assert res.returncode != 0
    line = "virnucflow: error: bad.fa: duplicate sequence ID 'r1' (lines 1 and 3); IDs must be unique within a sample"
    assert line in res.stderr
    assert line in (tmp_path / "logs" / "dup" / "preprocess.log").read_text()
    assert not (tmp_path / "results" / "dup" / "preprocess").exists() or not any((tmp_path / "results" / "dup" / "preprocess").iterdir())


def test_classifier_must_match_chunk_length(tmp_path):
    _sheet(tmp_path / "s.tsv", [("a", str(REFERENCE / "test_with_orfs.fa"))])
    res = snakemake(tmp_path, "-n", config=["samples=s.tsv", "chunk_length=300", "models={'classifier': 'virnucpro-500'}"])
    assert res.returncode != 0
    assert "chunk_length 300 does not match the classifier virnucpro-500 (trained on 500 bp windows)" in res.stdout + res.stderr
