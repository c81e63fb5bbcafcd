"""Reruns and resuming (issue 8, items 6 and 9): a replaced input is preprocessed again
even when it is older than the results, and the README's resume commands work after
a run was killed, removing the temporary files the killed steps left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from virnucflow.io.atomic import atomic_outputs

from .conftest import ORIGINAL, REPO
from .test_workflow import SNAKEMAKE, _sheet

TMP = re.compile(r"^\..+\.tmp\d+$")


def test_stale_temporaries_are_removed_by_the_same_step(tmp_path):
    out = tmp_path / "x.txt"
    stale = [tmp_path / ".x.txt.tmp12345", tmp_path / ".x.txt.tmp999999999"]
    for p in stale:
        p.write_text("half-written by a killed step")
    other = tmp_path / ".y.txt.tmp12345"  # another step's: left alone
    other.write_text("")
    with atomic_outputs([out]) as (tmp,):
        tmp.write_text("done\n")
    assert out.read_text() == "done\n"
    assert not any(p.exists() for p in stale)
    assert other.exists()


RECORDS = "results/s/preprocess/records.tsv"


def _preprocess_only(workdir: Path) -> subprocess.CompletedProcess:
    """Sample sheet ``s.tsv`` in ``workdir``, run up to the preprocessing of sample ``s``."""
    return subprocess.run(SNAKEMAKE + [RECORDS, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                                       "--cores", "1", "--configfile", str(REPO / "config" / "demo.yaml"),
                                       "--config", "samples=s.tsv"], capture_output=True, text=True)


@pytest.mark.slow
def test_replaced_input_with_an_older_date_is_preprocessed_again(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\n" + "ATG" * 100 + "\n")
    _sheet(tmp_path / "s.tsv", [("s", "in.fa")])

    res = _preprocess_only(tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / RECORDS).read_text() == "record_id\tlength\tchunks\tframes\na\t300\t1\t5\n"

    fasta.write_text(">b\n" + "ATG" * 200 + "\n")  # other content...
    os.utime(fasta, (946684800, 946684800))  # ...dated 2000-01-01, older than the results
    res = _preprocess_only(tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / RECORDS).read_text() == "record_id\tlength\tchunks\tframes\nb\t600\t2\t10\n"
    source = json.loads((tmp_path / "results" / "s" / "preprocess" / "input.json").read_text())
    assert source["size"] == fasta.stat().st_size == 604
    res = _preprocess_only(tmp_path)
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
def test_replaced_mate2_with_an_older_date_is_preprocessed_again(tmp_path):
    """Paired reads: the second mate's file is fingerprinted too (a changed mate 2 alone reruns)."""
    def fastq(mate, seqs):
        return "".join(f"@p{i}/{mate}\n{s}\n+\n{'F' * len(s)}\n" for i, s in enumerate(seqs))

    (tmp_path / "r1.fq").write_text(fastq(1, ["ATG" * 100]))
    mate2 = tmp_path / "r2.fq"
    mate2.write_text(fastq(2, ["ATG" * 100]))
    (tmp_path / "s.tsv").write_text("sample\tfasta\tmate2\ns\tr1.fq\tr2.fq\n")

    res = _preprocess_only(tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / RECORDS).read_text().splitlines()[2] == "p0/2\t300\t1\t5\tp0"
    mate2.write_text(fastq(2, ["ATG" * 200]))  # only mate 2 changes...
    os.utime(mate2, (946684800, 946684800))  # ...dated 2000-01-01, older than the results
    res = _preprocess_only(tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / RECORDS).read_text().splitlines()[2] == "p0/2\t600\t2\t10\tp0"
    source = json.loads((tmp_path / "results" / "s" / "preprocess" / "input.json").read_text())
    assert source["mate2"]["path"] == "r2.fq" and source["mate2"]["size"] == mate2.stat().st_size
    assert "r1.fq + r2.fq (mates): 2 records, 900 bases" in (tmp_path / "logs" / "s" / "preprocess.log").read_text()
    res = _preprocess_only(tmp_path)
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
def test_resume_after_kill_as_the_readme_says(tmp_path):
    _sheet(tmp_path / "s.tsv", [("k", str(ORIGINAL / "both_strands.fa"))])
    args = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
                        "--configfile", str(REPO / "config" / "demo.yaml"), "--config", "samples=s.tsv"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = tmp_path / "results" / "k" / "preprocess" / "records.tsv"
    deadline = time.monotonic() + 300
    while not records.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run, jobs included, as a lost node or kill -9 would
    proc.wait()
    assert records.exists()
    # temporary files of steps that had not finished, as a kill in mid-write leaves them
    later = [tmp_path / "results" / "k" / "features.h5", tmp_path / "results" / "k" / "summary.tsv"]
    later = [p for p in later if not p.exists()]
    assert later, "the run finished before it was killed"
    for p in later:
        p.with_name(f".{p.name}.tmp4999999").write_bytes(b"half")

    # The killed run's lock is still there: the same command alone refuses to start...
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode != 0 and "Directory cannot be locked" in res.stdout + res.stderr
    # ...so, as the README says: "snakemake ... --unlock", then the same command with --rerun-incomplete
    res = subprocess.run(args + ["--unlock"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(args + ["--rerun-incomplete"], capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert (tmp_path / "results" / "k" / "summary.tsv").is_file()
    leftovers = [p for p in (tmp_path / "results").rglob("*") if TMP.match(p.name)]
    assert leftovers == []
