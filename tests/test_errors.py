"""Every failure is one clear line, no failure writes a call, and odd inputs are handled or refused.

Each case is what a user meets (the cases of issue 23): a broken classifier, corrupt or odd files,
mistyped config values, colliding sample names, swapped or repeated mates; and the error boundary
itself (an unexpected exception is one line naming where its traceback is).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucflow.models.classifier import MLPClassifier, load_classifier
from virnucflow.steps.demo import random_classifier, save_original_classifier
from virnucflow.errors import ConfigError, ModelFileError, NumericalError

from .conftest import REPO, run_cli, sample_sheet_error

GOOD = b">seq1 first\n" + b"ATGGCTAGCAAAGGTACGT" * 30 + b"\n>seq2\n" + b"TTGACCATGGCA" * 40 + b"\n"


def _preprocess(tmp_path: Path, fasta: Path, *extra: str):
    out = tmp_path / "out"
    res = run_cli("preprocess", "--fasta", fasta, "--chunk-length", 500, "--chunked", out / "c.fa",
                  "--nucleotide", out / "nt.fa", "--protein", out / "aa.faa", "--records", out / "records.tsv", *extra)
    return res, out


def _one_line(res, expected: str, out: Path | None = None) -> None:
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"virnucflow: error: {expected}"
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), "outputs left behind"


# ---------------------------------------------------------------- 1. a broken classifier gives no calls


@pytest.mark.parametrize("bad", ["inf", "nan"])
@pytest.mark.parametrize("form", ["state_dict", "whole_module"])
def test_a_classifier_with_non_finite_weights_is_refused_at_load(tmp_path, bad, form):
    model = random_classifier(80, 16, 0)
    with torch.no_grad():
        model.hidden_layer.weight[3, 5] = float(bad)
    path = tmp_path / "clf.pth"
    if form == "state_dict":
        torch.save(model.state_dict(), path)
    else:
        save_original_classifier(model, path)
    kind = "Inf" if bad == "inf" else "NaN"
    expected = (f"{path}: the classifier's hidden_layer.weight holds 1 non-finite value(s) ({kind}): it would score "
                "every frame NaN; the file is damaged or was saved from a diverged training run")
    with pytest.raises(ModelFileError) as err:
        load_classifier(path)
    assert str(err.value) == expected


def test_our_own_classifier_pickled_whole_loads(tmp_path):
    """``torch.save(model)`` of VirNucFlow's class (not the original's ``__main__`` one): weights-only, allowed."""
    model = random_classifier(80, 16, 1)
    torch.save(model, tmp_path / "ours.pth")
    loaded, meta = load_classifier(tmp_path / "ours.pth")
    assert isinstance(loaded, MLPClassifier) and meta["input_dim"] == 80
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_no_calls_are_written_from_a_non_finite_score(tmp_path):
    from virnucflow.steps.predict import gather_sample

    records = tmp_path / "records.tsv"
    records.write_text("record_id\tlength\tchunks\tframes\nr1\t500\t1\t2\n")
    scores = tmp_path / "scores.tsv"
    scores.write_text("sample\tindex\tid\tprediction\tscore1\tscore2\n"
                      "s\t0\tr1_chunk_1F1\tvirus\t0.1\t0.9\ns\t1\tr1_chunk_1F2\tothers\tnan\tnan\n")
    outs = [tmp_path / n for n in ("p.txt", "h.csv", "summary.tsv", "w.bed", "w.tsv")]
    with pytest.raises(NumericalError, match=r"^sample 's': frame r1_chunk_1F2 has no finite score \(nan, nan; 1 such "
                                             r"frames\): no calls are written"):
        gather_sample("s", records, [scores], 500, *outs)
    assert not any(p.exists() for p in outs)


# ---------------------------------------------------------------- 3. one line, not a traceback


def _corrupt_early(data: bytes) -> bytes:
    b = bytearray(gzip.compress(data, mtime=0))
    for i in range(20, 40):  # inside the first deflate block: the first line cannot be read
        b[i] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("fmt", ["fasta", "fastq"])
def test_gzip_corrupt_at_its_start_is_one_line(tmp_path, fmt):
    body = GOOD * 20 if fmt == "fasta" else b"".join(b"@r%d\n%s\n+\n%s\n" % (i, b"ACGT" * 50, b"I" * 200) for i in range(200))
    p = tmp_path / f"corrupt.{fmt}.gz"
    p.write_bytes(_corrupt_early(body))
    res, out = _preprocess(tmp_path, p)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"virnucflow: error: {p}: corrupt gzip file: cannot read") and "Traceback" not in res.stderr
    assert last.endswith("check the file (gzip -t) or fetch it again")
    assert not out.exists() or not any(out.iterdir())


def test_a_nul_byte_in_a_header_is_refused(tmp_path):
    p = tmp_path / "nul.fa"
    p.write_bytes(b">se\x00q1\nACGTACGTACGTATGGCT\n")
    res, out = _preprocess(tmp_path, p)
    _one_line(res, f"{p}: line 1: the header holds control character b'\\x00'; sequence IDs and descriptions must "
                   "be printable text", out)


def test_a_truncated_embedding_file_names_the_file(tmp_path):
    from virnucflow.io.features import Embeddings, write_h5

    for name, dim in (("a.h5", 48), ("b.h5", 32)):
        write_h5(tmp_path / name, Embeddings(["x_chunk_1F1"], np.zeros(1, np.int64), np.ones((1, dim), np.float32)))
    data = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "a.h5").write_bytes(data[: len(data) // 2])
    clf = tmp_path / "clf.pth"
    save_original_classifier(random_classifier(80, 16, 0), clf)
    res = run_cli("score", "--dnabert-s", tmp_path / "a.h5", "--esm2", tmp_path / "b.h5", "--classifier", clf,
                  "--scores", tmp_path / "s.tsv", "--info", tmp_path / "s.json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"virnucflow: error: {tmp_path / 'a.h5'}: truncated, damaged or not a VirNucFlow "
                           "embeddings file (") and last.endswith("); delete it and rerun")
    assert not (tmp_path / "s.tsv").exists()


# ---------------------------------------------------------------- 4./5. config, sheets, mates, odd files


def _dry_run(tmp_path: Path, text: str):
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\tfasta\ns1\t{REPO / 'resources' / 'demo' / 'lambda_contigs.fa'}\n")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", tmp_path, "-n",
                           "--configfile", REPO / "config" / "demo.yaml", extra, "--config", f"samples={sheet}"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("text,expected", [
    ("calling: {min_viral_fracton: 0.9}\n", "config key calling.min_viral_fracton: unknown key; did you mean "
     "min_viral_fraction? (known here: preset, min_viral_fraction, min_windows)"),
    ("embedding: {esm2: {precison: fp32}}\n", "config key embedding.esm2.precison: unknown key; did you mean "
     "precision? (known here: precision, packing, attention, fused, token_budget)"),
    ("chunk_length: 500.0\n", "config key chunk_length: 500.0 is not a whole number; write 500"),
    ("shards: 2.0\n", "config key shards: 2.0 is not a whole number; write 2"),
    ("resources: {embed: {mem_mbb: 100}}\n", "config key resources.embed.mem_mbb: unknown key; did you mean mem_mb? "
     "(keys other than mem_mb, runtime, cpus, gpu are passed to the executor as resources)"),
])
def test_config_mistakes_are_one_line_at_start(tmp_path, text, expected):
    res = _dry_run(tmp_path, text)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"virnucflow: error: {expected}"
    assert "Traceback" not in res.stderr and "File " not in res.stderr
    import yaml

    from virnucflow.planning.config import load_config

    def merge(a, b):
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}

    config = tmp_path / "full.yaml"
    config.write_text(yaml.safe_dump(merge(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()),
                                           yaml.safe_load(text))))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value) == f"{config}: {expected}"


def test_extra_resource_keys_still_pass_to_the_executor(tmp_path):
    assert _dry_run(tmp_path, "resources: {embed: {slurm_partition: gpu, constraint: h100}}\n").returncode == 0


def test_the_same_file_as_both_mates_is_refused(tmp_path):
    fq = tmp_path / "r.fq"
    fq.write_text("@r1/1\nACGTACGT\n+\nIIIIIIII\n")
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\tfasta\tmate2\ns1\t{fq}\t{fq}\n")
    from virnucflow.errors import InputError
    from virnucflow.io.samples import read_sample_sheet

    with pytest.raises(InputError, match=rf"^{sheet}: line 2: sample 's1': fasta and mate2 are the same file "
                                         rf"\({fq}\); give the mate 2 \(R2\) file as mate2$"):
        read_sample_sheet(sheet)


def test_mate_files_given_the_wrong_way_round_are_refused(tmp_path):
    m1, m2 = tmp_path / "R1.fq", tmp_path / "R2.fq"
    m1.write_text("@p1/1\nACGTACGTAAAT\n+\nIIIIIIIIIIII\n")
    m2.write_text("@p1/2\nTTGACCATGGCA\n+\nIIIIIIIIIIII\n")
    res, out = _preprocess(tmp_path, m2, "--mate2", m1)
    _one_line(res, f"{m2}: read 1 is 'p1/2', named as mate 2, but the file is given as mate 1; swap fasta and mate2 "
                   "in the sample sheet (or give the right files)", out)
    res, out = _preprocess(tmp_path, m1, "--mate2", m1)  # mate 2's reads say /1
    _one_line(res, f"{m1}: read 1 is 'p1/1', named as mate 1, but the file is given as mate 2; swap fasta and mate2 "
                   "in the sample sheet (or give the right files)", out)


@pytest.mark.parametrize("fmt", ["fasta", "fastq", "fasta.gz"])
def test_a_byte_order_mark_is_skipped_and_said(tmp_path, fmt):
    body = GOOD if fmt.startswith("fasta") else b"@r1\nACGTACGTATGGCTAGCAAAGGT\n+\nIIIIIIIIIIIIIIIIIIIIIII\n"
    plain, marked = tmp_path / f"plain.{fmt}", tmp_path / f"bom.{fmt}"
    write = gzip.compress if fmt.endswith(".gz") else bytes
    plain.write_bytes(write(body))
    marked.write_bytes(write(b"\xef\xbb\xbf" + body))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    res_a, out_a = _preprocess(tmp_path / "a", plain)
    res_b, out_b = _preprocess(tmp_path / "b", marked)
    assert res_a.returncode == res_b.returncode == 0, res_b.stderr
    for name in ("c.fa", "nt.fa", "aa.faa", "records.tsv"):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    assert f"{marked}: starts with a UTF-8 byte order mark (written by some Windows editors): skipped" in res_b.stderr


def test_a_sample_sheet_with_a_byte_order_mark_reads(tmp_path):
    from virnucflow.io.samples import read_sample_sheet

    fa = tmp_path / "x.fa"
    fa.write_bytes(GOOD)
    sheet = tmp_path / "s.tsv"
    sheet.write_bytes(b"\xef\xbb\xbfsample\tfasta\ns1\t" + str(fa).encode() + b"\n")
    assert [(s.name, s.fasta) for s in read_sample_sheet(sheet)] == [("s1", str(fa))]


def test_cr_only_line_ends_are_refused_saying_so(tmp_path):
    p = tmp_path / "mac.fa"
    p.write_bytes(GOOD.replace(b"\n", b"\r"))
    res, out = _preprocess(tmp_path, p)
    _one_line(res, f"{p}: line 1: carriage returns without line feeds (old Mac line ends, CR only); convert the "
                   "file, e.g. tr '\\r' '\\n' < in.fa > out.fa", out)


def test_a_named_pipe_is_refused_without_waiting(tmp_path):
    pipe = tmp_path / "reads.fa"
    os.mkfifo(pipe)
    res, out = _preprocess(tmp_path, pipe)
    _one_line(res, f"{pipe}: is a named pipe, not a regular file: the workflow reads each input more than once (to "
                   "plan the jobs, then to preprocess); save it to a file first", out)
    sheet, message = sample_sheet_error(tmp_path, "s1", pipe)
    assert message == (f"{sheet}: line 2: sample 's1': FASTA file {pipe} is not a regular file (a pipe or a device: "
                       "the workflow reads each input more than once); save it to a file first")


# ---------------------------------------------------------------- the boundary


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_the_log(tmp_path):
    log = tmp_path / "job.log"
    code = ("from virnucflow.planning.step import cli_step\n"
            f"with cli_step({str(log)!r}):\n"
            "    {}['missing']\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1
    line = (f"virnucflow: error: unexpected KeyError: 'missing'; this is a bug: please report it with {log}.traceback "
            "(it holds the traceback)")
    assert res.stderr.splitlines() == [line]
    assert log.read_text().splitlines() == [line]  # what Snakemake shows of a failed job: the one line
    text = Path(f"{log}.traceback").read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'missing'" in text


# ---------------------------------------------------------------- whole runs: no calls, and the status says FAILED


def _snakemake(workdir: Path, *args, extra: str = "") -> subprocess.CompletedProcess:
    (workdir / "extra.yaml").write_text(extra or "{}\n")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", workdir,
                           "--cores", "2", *args, "--configfile", REPO / "config" / "demo.yaml", workdir / "extra.yaml",
                           "--config", f"samples={workdir / 's.tsv'}"], capture_output=True, text=True)


@pytest.mark.slow
def test_a_run_with_a_nan_classifier_writes_no_call_and_status_says_failed(tmp_path):
    (tmp_path / "s.tsv").write_text(f"sample\tfasta\nctl\t{REPO / 'resources' / 'demo' / 'synthetic_controls.fa.gz'}\n")
    model = random_classifier(80, 16, 0)
    with torch.no_grad():
        model.output_layer.bias[1] = float("nan")
    clf = tmp_path / "nan.pth"
    save_original_classifier(model, clf)
    res = _snakemake(tmp_path, extra=f"models: {{classifier: {clf}}}\n")
    assert res.returncode == 1
    line = (f"virnucflow: error: {clf}: the classifier's output_layer.bias holds 1 non-finite value(s) (NaN): it would "
            "score every frame NaN; the file is damaged or was saved from a diverged training run")
    assert line in res.stderr.splitlines() and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("results/*/prediction_results*")) and not list(tmp_path.glob("results/*/summary.tsv"))
    status = run_cli("status", tmp_path)
    assert f"run: FAILED in check_model (logs/models/classifier.log): {line}" in status.stdout.splitlines(), status.stdout


@pytest.mark.slow
def test_a_truncated_embedding_file_fails_the_scoring_in_one_line_and_status_says_failed(tmp_path):
    (tmp_path / "s.tsv").write_text(f"sample\tfasta\nctl\t{REPO / 'resources' / 'demo' / 'synthetic_controls.fa.gz'}\n")
    assert _snakemake(tmp_path, extra="output: {embeddings: true, merged_pt: false}\n").returncode == 0
    h5 = tmp_path / "results" / "batches" / "ctl" / "embeddings" / "esm2" / "1-of-1.h5"
    h5.write_bytes(h5.read_bytes()[:1000])
    res = _snakemake(tmp_path, "--forcerun", "score", extra="output: {embeddings: true, merged_pt: false}\n")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    status = run_cli("status", tmp_path, "--json")
    import json

    record = json.loads(status.stdout)
    (ctl,) = record["samples"]
    assert ctl["state"] == "failed" and ctl["failed"]["step"] == "score"
    assert ctl["failed"]["error"].startswith(f"virnucflow: error: {h5.relative_to(tmp_path)}: truncated, damaged or "
                                             "not a VirNucFlow embeddings file")
    assert record["run"]["state"] == "failed" and record["run"]["failures"][0]["rule"] == "score"
    text = run_cli("status", tmp_path).stdout
    assert "ctl: steps " in text and ", FAILED in score (logs/batches/ctl/score/1-of-1.log): virnucflow: error: " in text
