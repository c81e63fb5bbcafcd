"""Issue 8 through the whole workflow (demo models, CPU): unusual input gives the right
results, bad input one line, and a changed model reruns only what depends on it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import REFERENCE
from .test_unusual_input import LAMBDA, ODD_IDS, to_rna
from .test_workflow import _sheet, snakemake

pytestmark = pytest.mark.slow
SHORT = {"len5": "ATGAA", "len8": "ATGAAAGG", "len9": "ATGAAAGGC", "long": "ATG" * 100}


def _overlay(workdir: Path, name: str, text: str) -> Path:
    p = workdir / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run: lambda as DNA and as RNA, odd IDs, very short records."""
    wd = tmp_path_factory.mktemp("unusual")
    (wd / "rna.fa").write_bytes(to_rna(LAMBDA.read_bytes()))
    (wd / "odd.fa").write_text("".join(f">{i} x\n{'ATG' * 200}\n" for i in ODD_IDS), encoding="utf-8")
    (wd / "short.fa").write_text("".join(f">{k}\n{v}\n" for k, v in SHORT.items()))
    _sheet(wd / "samples.tsv", [("dna", str(LAMBDA)), ("rna", "rna.fa"), ("odd", "odd.fa"), ("short", "short.fa")])
    res = snakemake(wd, config=["samples=samples.tsv"])
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def _jobs(res) -> dict[str, int]:
    """The dry run's job table: rule -> count."""
    table = {}
    for line in (res.stdout + res.stderr).splitlines():
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if m and m.group(1) != "total":
            table[m.group(1)] = int(m.group(2))
    return table


def test_rna_input_gives_the_dna_results(run):
    dna, rna = run / "results" / "dna", run / "results" / "rna"
    for name in ["preprocess/chunked.fa", "preprocess/identified_nucleotide.fa", "preprocess/identified_protein.faa",
                 "preprocess/records.tsv", "prediction_results.txt", "prediction_results_highestscore.csv",
                 "summary.tsv"]:
        assert (rna / name).read_bytes() == (dna / name).read_bytes(), name
    assert (dna / "prediction_results.txt").read_text().count("\n") == 2 + 52  # banner, header, 52 frames
    assert "rna.fa: 15 of 15 records contain U (RNA): read as T" in (run / "logs" / "rna" / "preprocess.log").read_text()


def test_odd_ids_round_trip(run):
    res = run / "results" / "odd"
    summary = [line.split("\t") for line in (res / "summary.tsv").read_text(encoding="utf-8").splitlines()[2:]]
    assert [row[0] for row in summary] == ODD_IDS
    windows = (res / "prediction_results_highestscore.csv").read_text(encoding="utf-8").splitlines()[2:]
    assert [w.split("\t")[0] for w in windows] == sorted(f"{i}_chunk_{k}" for i in ODD_IDS for k in (1, 2))
    frames = (res / "prediction_results.txt").read_text(encoding="utf-8").splitlines()[2:]
    assert {f.split("\t")[0].split("_chunk_")[0] for f in frames} == set(ODD_IDS)


def test_short_records_called_too_short(run):
    rows = [line.split("\t") for line in (run / "results" / "short" / "summary.tsv").read_text().splitlines()[2:]]
    assert [(r[0], r[-1]) for r in rows][:3] == [("len5", "too-short"), ("len8", "too-short"),
                                                  ("len9", rows[2][-1])]
    assert rows[2][-1] in ("virus", "non-viral") and rows[3][-1] in ("virus", "non-viral")
    assert int(rows[0][3]) > 0  # its frames were scored all the same
    log = (run / "logs" / "short" / "predict.log").read_text()
    assert "2 input sequences shorter than 9 bp: called too-short" in log
    assert "called viral (calling: min_viral_fraction 0.5, min_windows 1)" in log  # the values used
    assert "fewer than" not in log  # min_windows 1: no sequence is too short by windows


def test_input_fingerprint_recorded(run):
    import hashlib
    import json

    source = json.loads((run / "results" / "dna" / "preprocess" / "input.json").read_text())
    data = LAMBDA.read_bytes()
    assert source["size"] == len(data)
    assert source["blake2b"] == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert source["records"] == 15


def test_changing_the_classifier_reruns_only_prediction(run):
    shutil.copy(run / "resources" / "demo_models" / "virnucpro_demo.pth", run / "clf_copy.pth")
    overlay = _overlay(run, "clf.yaml", "models:\n  classifier: clf_copy.pth\n  classifier_chunk_length: 500\n")
    res = snakemake(run, "-n", config=["samples=samples.tsv"], configfiles=[overlay])
    assert res.returncode == 0, res.stderr[-2000:]
    # the demo keeps the embedding files (output.merged_pt): the scoring and what is made from it (the calls,
    # the report), not the gate or features.h5; one shard per sample (each < 4,096 frames)
    assert _jobs(res) == {"check_model": 1, "score": 4, "predict": 4, "report_sample": 4, "report_run": 1, "all": 1}


def test_changing_one_embedding_model_reruns_the_embedding_jobs(run):
    """One job per shard embeds with both models: a new ESM-2 file reruns those jobs (and not the
    preprocessing or the shards); the merge and prediction follow."""
    shutil.copy(run / "resources" / "demo_models" / "esm2_demo.pt", run / "esm2_copy.pt")
    overlay = _overlay(run, "esm.yaml", "models:\n  esm2: esm2_copy.pt\n")
    res = snakemake(run, "-n", config=["samples=samples.tsv"], configfiles=[overlay])
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = _jobs(res)
    assert jobs == {"check_model": 2, "embed": 4, "score": 4, "nan_gate": 4, "merge": 4, "export_merged_pt": 4,
                    "predict": 4, "report_sample": 4, "report_run": 1, "all": 1}


def test_shards_capped_by_the_work(run):
    """Shards are cut at whole 4,096-frame classifier batches: more shards than that would be empty GPU jobs."""
    res = snakemake(run, "-n", config=["samples=samples.tsv", "shards=500"])
    assert res.returncode == 0, res.stderr[-2000:]
    for sample in ("dna", "rna", "odd", "short"):
        assert any(line.startswith(f"virnucflow: 500 embedding shards requested but sample {sample} has ")
                   and line.endswith("using 1 shard(s)") for line in (res.stdout + res.stderr).splitlines()), res.stderr[-2000:]
    assert "embed" not in _jobs(res)  # each sample's one shard is the fixture's, done
    res = snakemake(run, "-n", "--set-scatter", "embed=300", config=["samples=samples.tsv"])
    assert "embed" not in _jobs(res) and "500 embedding shards" not in res.stdout + res.stderr


def test_auto_pools_small_samples_into_one_embedding_job(run):
    """shards: auto: samples below shard_frames share a batch (one GPU job for all); shard_frames below
    every sample gives each its own batch."""
    frames = {s: (run / "results" / s / "preprocess" / "identified_protein.faa").read_text().count(">")
              for s in ("dna", "rna", "odd", "short")}
    assert min(frames.values()) > 0
    for per_shard, batches in ((sum(frames.values()) + 1, 1), (1, 4)):
        res = snakemake(run, "-n", config=["samples=samples.tsv", "shards=auto", f"shard_frames={per_shard}"])
        assert res.returncode == 0, res.stderr[-2000:]
        jobs = _jobs(res)
        assert jobs.get("embed", 0) == jobs.get("plan_shards", 0) == (batches if batches == 1 else 0), jobs
    # pooled: the one batch is named after the first sample, its plan lists all four samples
    res = snakemake(run, "-n", "--printshellcmds", config=["samples=samples.tsv", "shards=auto",
                                                           f"shard_frames={sum(frames.values()) + 1}"])
    assert "results/batches/dna/shards.tsv" in res.stdout + res.stderr


# ---------------------------------------------------------------- one line at the start


def _fails_at_start(tmp_path, line, config=(), configfiles=()):
    res = snakemake(tmp_path, "-n", config=["samples=s.tsv", *config], configfiles=list(configfiles))
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert f"virnucflow: error: {line}" in out.splitlines(), out[-2000:]  # the one line, nothing else
    assert "Traceback" not in out and "WorkflowError" not in out
    assert not (tmp_path / "results").exists()


def test_classifier_path_needs_its_window_length(tmp_path):
    _sheet(tmp_path / "s.tsv", [("a", str(REFERENCE / "test_with_orfs.fa"))])
    overlay = _overlay(tmp_path, "o.yaml", "models:\n  classifier_chunk_length: null\n")
    _fails_at_start(tmp_path, "models.classifier is a file (resources/demo_models/virnucpro_demo.pth): set "
                    "models.classifier_chunk_length to the window length it was trained on (300 or 500 for "
                    "VirNucPro's; it must equal chunk_length 500)", configfiles=[overlay])
    overlay.write_text("models:\n  classifier_chunk_length: 300\n")
    _fails_at_start(tmp_path, "chunk_length 500 does not match the classifier resources/demo_models/virnucpro_demo.pth "
                    "(models.classifier_chunk_length: trained on 300 bp windows); use chunk_length 300 or a classifier "
                    "trained on 500", configfiles=[overlay])


@pytest.mark.parametrize(
    "name,problem",
    [("..", "must be a plain file name: letters, digits, '_', '.' and '-', starting with a letter or digit"),
     (".", "must be a plain file name: letters, digits, '_', '.' and '-', starting with a letter or digit"),
     ("models.json", "is reserved (it would collide with the workflow's results/models.json)")],
)
def test_bad_sample_names(tmp_path, name, problem):
    _sheet(tmp_path / "s.tsv", [(name, str(REFERENCE / "test_with_orfs.fa"))])
    _fails_at_start(tmp_path, f"s.tsv: line 2: sample name {name!r} {problem}")


def test_directory_as_fasta(tmp_path):
    (tmp_path / "reads").mkdir()
    _sheet(tmp_path / "s.tsv", [("a", "reads")])
    _fails_at_start(tmp_path, "s.tsv: line 2: sample 'a': FASTA file reads is a directory, not a file")


def test_bogus_device(tmp_path):
    _sheet(tmp_path / "s.tsv", [("a", str(REFERENCE / "test_with_orfs.fa"))])
    overlay = _overlay(tmp_path, "o.yaml", "embedding:\n  device: bogus\n")
    _fails_at_start(tmp_path, "config key embedding.device: 'bogus' does not match '^(auto|cpu|cuda(:[0-9]+)?)$' "
                    "(allowed: auto (the GPU the job was given, else CPU), cpu, cuda or cuda:N)", configfiles=[overlay])


def test_without_features_h5_the_calls_are_the_same_and_the_merge_is_not_run(run, tmp_path):
    """output.features and output.merged_pt off (the defaults outside the demo): predict joins the
    embedding files itself, nothing writes features.h5, and the calls are byte for byte those of the
    run that wrote it; where features.h5 is asked for, predict still does not wait for it."""
    from .conftest import run_cli

    _sheet(tmp_path / "samples.tsv", [("dna", str(LAMBDA))])
    off = _overlay(tmp_path, "off.yaml", "output: {features: false, merged_pt: false}\n")
    res = snakemake(tmp_path, config=["samples=samples.tsv"], configfiles=[off])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "merge" not in _jobs(res) and "export_merged_pt" not in _jobs(res)
    assert not list(tmp_path.rglob("features.h5"))
    assert not list(tmp_path.rglob("*.h5")), "the embedding files are removed once scored"
    assert sorted(p.name for p in (tmp_path / "results" / "batches" / "dna" / "scores").iterdir()) == [
        "1-of-1.json", "1-of-1.tsv"]
    assert (tmp_path / "results" / "batches" / "dna" / "embed" / "1-of-1.json").is_file()  # the embedding's record
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "summary.tsv", "windows.tsv"):
        assert (tmp_path / "results" / "dna" / name).read_bytes() == (run / "results" / "dna" / name).read_bytes(), name
    status = run_cli("status", tmp_path)
    assert status.returncode == 0 and status.stdout.split(", ")[0] == "dna: steps 6/6", status.stdout
    assert status.stdout.strip().endswith("finished")
    graph = snakemake(run, "--rulegraph", config=["samples=samples.tsv"])  # the demo: merged_pt on
    assert graph.returncode == 0, graph.stderr[-2000:]
    labels = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", graph.stdout, re.M))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", graph.stdout, re.M)}
    assert ("nan_gate", "merge") in edges and ("merge", "export_merged_pt") in edges
    assert ("nan_gate", "predict") in edges and ("merge", "predict") not in edges
    assert ("embed", "score") in edges and ("score", "predict") in edges and ("embed", "predict") not in edges
