"""Inputs that used to give wrong results without a word (issue 8, items 1-5), library level.

The same cases run through the whole workflow in tests/test_unusual_workflow.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from virnucflow.planning.checks import ConfigError, classifier_chunk_length
from virnucflow.steps.predict import highest_scores, read_predictions, summarise, write_predictions
from virnucflow.io.tables import write_tsv as write_table
from virnucflow.steps.preprocess import preprocess
from virnucflow.io.samples import read_sample_sheet

from .conftest import REPO, sample_sheet_error

LAMBDA = REPO / "resources" / "demo" / "lambda_contigs.fa"
OUTPUTS = ["chunked.fa", "nt.fa", "aa.faa", "records.tsv"]


def to_rna(dna: bytes) -> bytes:
    """T -> U and t -> u in sequence lines only."""
    return b"".join(line if line.startswith(b">") else line.replace(b"T", b"U").replace(b"t", b"u")
                    for line in dna.splitlines(keepends=True))


def _run(tmp_path, name, fasta, chunk=500):
    out = tmp_path / name
    stats = preprocess(fasta, chunk, *(out / f for f in OUTPUTS))
    return out, stats


# ---------------------------------------------------------------- 1. RNA input


def test_rna_gives_the_dna_outputs_byte_for_byte(tmp_path, caplog):
    dna = LAMBDA.read_bytes()
    mixed_case = dna.replace(b"GGGCGGCGACCTCGCGGGTTTTCG", b"gggcggcgacctcgcgggttttcg")  # lowercase t -> u too
    (tmp_path / "dna.fa").write_bytes(mixed_case)
    (tmp_path / "rna.fa").write_bytes(to_rna(mixed_case))
    assert b"u" in (tmp_path / "rna.fa").read_bytes() and b"U" in (tmp_path / "rna.fa").read_bytes()
    dna_out, dna_stats = _run(tmp_path, "dna", tmp_path / "dna.fa")
    with caplog.at_level(logging.WARNING, logger="virnucflow"):
        rna_out, rna_stats = _run(tmp_path, "rna", tmp_path / "rna.fa")
    for name in OUTPUTS:
        assert (rna_out / name).read_bytes() == (dna_out / name).read_bytes(), name
    assert dna_stats.frames == rna_stats.frames == 52  # not 606: the stop codons are seen again
    assert rna_stats.rna_records == 15 and dna_stats.rna_records == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'rna.fa'}: 15 of 15 records contain U (RNA): read as T"]


# ---------------------------------------------------------------- 2. classifier window length


@pytest.mark.parametrize(
    "classifier,declared,chunk,expected",
    [("virnucpro-500", None, 500, 500), ("virnucpro-300", None, 300, 300), ("virnucpro-300", 300, 300, 300),
     ("my/clf.pth", 300, 300, 300), ("500_model.pth", 300, 300, 300)],  # the file name never decides
)
def test_classifier_chunk_length_accepted(classifier, declared, chunk, expected):
    assert classifier_chunk_length(classifier, declared, chunk) == expected


@pytest.mark.parametrize(
    "classifier,declared,chunk,message",
    [
        ("virnucpro-500", None, 300, "chunk_length 300 does not match the classifier virnucpro-500 (trained on 500 bp "
         "windows); use virnucpro-300 or chunk_length 500"),
        ("virnucpro-500", 300, 300, "models.classifier_chunk_length 300 contradicts models.classifier virnucpro-500 "
         "(trained on 500 bp windows); remove the key or fix it"),
        ("models/500_model.pth", None, 500, "models.classifier is a file (models/500_model.pth): set "
         "models.classifier_chunk_length to the window length it was trained on (300 or 500 for VirNucPro's; it must "
         "equal chunk_length 500)"),
        ("models/300_model.pth", 500, 300, "chunk_length 300 does not match the classifier models/300_model.pth "
         "(models.classifier_chunk_length: trained on 500 bp windows); use chunk_length 500 or a classifier trained "
         "on 300"),
    ],
)
def test_classifier_chunk_length_refused(classifier, declared, chunk, message):
    with pytest.raises(ConfigError) as exc:
        classifier_chunk_length(classifier, declared, chunk)
    assert str(exc.value) == message


# ---------------------------------------------------------------- 3. quote characters in IDs

ODD_IDS = ['dq"uote', "sq'uote", "#hash", "back\\slash", "com,ma", "ünï—cødé", '"', "NA"]


def test_tsv_outputs_round_trip_odd_ids(tmp_path):
    fasta = tmp_path / "odd.fa"
    fasta.write_text("".join(f">{i} description\n{'ATG' * 200}\n" for i in ODD_IDS), encoding="utf-8")
    out, _ = _run(tmp_path, "pre", fasta)
    frame_ids = [line[1:] for line in (out / "aa.faa").read_text().splitlines() if line.startswith(">")]
    scores = np.tile([[0.25, 0.75]], (len(frame_ids), 1)).astype(np.float32)
    write_predictions(tmp_path / "pred.txt", frame_ids, scores)
    predictions = read_predictions(tmp_path / "pred.txt")
    assert predictions["Sequence_ID"].tolist() == frame_ids
    windows = highest_scores(predictions)
    write_table(tmp_path / "highest.csv", windows)
    summary = summarise(out / "records.tsv", predictions, windows)
    write_table(tmp_path / "summary.tsv", summary)
    rows = [line.split("\t") for line in (tmp_path / "summary.tsv").read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows[1:]] == ODD_IDS
    assert [r[-1] for r in rows[1:]] == ["virus"] * len(ODD_IDS)
    highest = [line.split("\t")[0] for line in (tmp_path / "highest.csv").read_text(encoding="utf-8").splitlines()]
    assert highest[1:] == sorted(f"{i}_chunk_{k}" for i in ODD_IDS for k in (1, 2))


def test_sample_sheet_paths_with_quotes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / '"best" reads.fa').write_text(">r\nACGT\n")
    (tmp_path / "s.tsv").write_text('sample\tfasta\nx\t"best" reads.fa\n')
    assert read_sample_sheet("s.tsv")[0].fasta == '"best" reads.fa'


# ---------------------------------------------------------------- 4. sample names


@pytest.mark.parametrize("name", [".", "..", ".hidden", "-x", "a/b"])
def test_sample_name_not_a_plain_file_name(tmp_path, name):
    (tmp_path / "x.fa").write_text(">r\nACGT\n")
    sheet, message = sample_sheet_error(tmp_path, name, tmp_path / "x.fa")
    assert message == (f"{sheet}: line 2: sample name {name!r} must be a plain file name: letters, digits, "
                              "'_', '.' and '-', starting with a letter or digit")


@pytest.mark.parametrize("name,what", [("models.json", "results/models.json"),
                                       ("models", "results/models/ and logs/models/"),
                                       ("benchmarks", "logs/benchmarks/"), ("report_run.log", "logs/report_run.log"),
                                       ("report_run.tsv", "logs/benchmarks/report_run.tsv"),
                                       ("models_manifest.tsv", "logs/benchmarks/models_manifest.tsv")])
def test_sample_name_reserved(tmp_path, name, what):
    (tmp_path / "x.fa").write_text(">r\nACGT\n")
    sheet, message = sample_sheet_error(tmp_path, name, tmp_path / "x.fa")
    assert message == f"{sheet}: line 2: sample name {name!r} is reserved (it would collide with the workflow's {what})"


# ---------------------------------------------------------------- 5. very short records


def test_short_records_are_called_too_short(tmp_path):
    seqs = {"len5": "ATGAA", "len8": "ATGAAAGG", "len9": "ATGAAAGGC", "long": "ATG" * 100}
    fasta = tmp_path / "short.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    out, _ = _run(tmp_path, "pre", fasta)
    frame_ids = [line[1:] for line in (out / "aa.faa").read_text().splitlines() if line.startswith(">")]
    assert {f.split("_chunk_")[0] for f in frame_ids} == set(seqs)  # every record has frames to score
    scores = np.tile([[0.1, 0.9]], (len(frame_ids), 1)).astype(np.float32)  # all frames "viral"
    write_predictions(tmp_path / "pred.txt", frame_ids, scores)
    predictions = read_predictions(tmp_path / "pred.txt")
    windows = highest_scores(predictions)
    assert windows["Is_Virus"].all()  # the original's per-window outputs are unchanged
    summary = summarise(out / "records.tsv", predictions, windows)
    assert summary["call"].tolist() == ["too-short", "too-short", "virus", "virus"]
    assert summary["frames_scored"].tolist()[:2] == [int((pd.Series(frame_ids).str.startswith(k)).sum())
                                                     for k in ("len5", "len8")]
