"""Preprocessing reproduces the original VirNucPro byte for byte."""

from __future__ import annotations

import shutil

import pytest

from virnucflow.steps.preprocess import chunk_bounds, preprocess, six_frames

from .conftest import ORIGINAL, REFERENCE, run_cli

# (input, chunk length, expected chunked, identified nucleotide, identified protein)
SHARED_CASES = [
    (
        REFERENCE / f"{name}.fa",
        500,
        REFERENCE / f"{name}_chunked500.fa",
        REFERENCE / f"{name}_identified_nucleotide.fa",
        REFERENCE / f"{name}_identified_protein.faa",
    )
    for name in ("test_with_orfs", "test_fixed_500bp")
]
# Inputs made for VirNucFlow; the expected files were written by the original's
# split_fasta_chunk / identify_seq (tests/data/original/PROVENANCE.md).
ORIGINAL_INPUTS = ["edge_lengths", "both_strands", "lowercase", "iupac", "crlf_wrapped", "lambda_pieces"]
ORIGINAL_CASES = [
    (
        ORIGINAL / f"{name}.fa",
        length,
        ORIGINAL / f"{name}.L{length}.chunked.fa",
        ORIGINAL / f"{name}.L{length}.identified_nucleotide.fa",
        ORIGINAL / f"{name}.L{length}.identified_protein.faa",
    )
    for name in ORIGINAL_INPUTS
    for length in (300, 500)
]
# The original cannot read gzip; ours must give the plain file's outputs.
GZIP_CASES = [
    (ORIGINAL / "lowercase.fa.gz", length, *case[2:])
    for length in (300, 500)
    for case in ORIGINAL_CASES
    if case[0].name == "lowercase.fa" and case[1] == length
]


def _ids(cases):
    return [f"{c[0].name}-L{c[1]}" for c in cases]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", SHARED_CASES + ORIGINAL_CASES + GZIP_CASES, ids=_ids(SHARED_CASES + ORIGINAL_CASES + GZIP_CASES))
def test_outputs_byte_identical_to_original(case, threads, tmp_path, monkeypatch):
    """One process, or three translating batches of a few records each (written back in order)."""
    fasta, length, chunked, nucleotide, protein = case
    out = [tmp_path / "chunked.fa", tmp_path / "nt.fa", tmp_path / "aa.faa"]
    if threads > 1:
        monkeypatch.setattr("virnucflow.steps.preprocess.BATCH_BASES", 2000)
    preprocess(fasta, length, *out, threads=threads)
    for got, expected in zip(out, (chunked, nucleotide, protein)):
        assert got.read_bytes() == expected.read_bytes(), f"{got.name} differs from {expected}"


def test_fixtures_cover_both_strands_and_all_frames():
    """The fixtures exercise every frame suffix, so the tests above can catch a strand bug."""
    text = "".join((ORIGINAL / f"{n}.L500.identified_protein.faa").read_text() for n in ORIGINAL_INPUTS)
    for suffix in ("F1", "F2", "F3", "R1", "R2", "R3"):
        assert f"{suffix}\n" in text


@pytest.mark.parametrize("threads", ["1", "2"])
def test_cli_writes_the_same_files(tmp_path, threads):
    fasta, length, chunked, nucleotide, protein = SHARED_CASES[0]
    res = run_cli(
        "preprocess", "--fasta", fasta, "--chunk-length", length,
        "--chunked", tmp_path / "c.fa", "--nucleotide", tmp_path / "n.fa",
        "--protein", tmp_path / "p.faa", "--records", tmp_path / "r.tsv", "--threads", threads,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c.fa").read_bytes() == chunked.read_bytes()
    assert (tmp_path / "n.fa").read_bytes() == nucleotide.read_bytes()
    assert (tmp_path / "p.faa").read_bytes() == protein.read_bytes()
    assert (tmp_path / "r.tsv").read_text().splitlines() == [
        "record_id\tlength\tchunks\tframes",
        "synthetic_seq_1\t174\t1\t2",
        "synthetic_seq_2\t171\t1\t2",
    ]


@pytest.mark.parametrize(
    "length,chunk,expected",
    [
        (174, 500, [(0, 174)]),
        (500, 500, [(0, 500)]),
        (501, 500, [(0, 500), (250, 501)]),
        # the original's overlap arithmetic overshoots: the last window is short
        (1200, 500, [(0, 500), (399, 899), (798, 1200)]),
        (1000, 300, [(0, 300), (249, 549), (498, 798), (747, 1000)]),
        (1500, 500, [(0, 500), (500, 1000), (1000, 1500)]),
    ],
)
def test_chunk_bounds_match_original_arithmetic(length, chunk, expected):
    assert chunk_bounds(length, chunk) == expected


def test_frames_with_ambiguous_codons_drop_them():
    # ATG NNN TGG: the NNN codon is dropped (not X), as the original does
    assert six_frames("ATGNNNTGG")[0] == "MW"
    # a stop anywhere in a frame marks it
    assert "*" in six_frames("ATGTAAGGG")[0]


def test_chunk_length_below_one_codon_is_refused(tmp_path):
    res = run_cli(
        "preprocess", "--fasta", REFERENCE / "test_with_orfs.fa", "--chunk-length", 2,
        "--chunked", tmp_path / "c.fa", "--nucleotide", tmp_path / "n.fa", "--protein", tmp_path / "p.faa",
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == "virnucflow: error: chunk_length must be at least 3 (one codon), got 2"
    assert list(tmp_path.iterdir()) == []


def test_uncompressed_copy_with_other_name_is_read(tmp_path):
    # gzip is recognised by content, not by file name
    src = ORIGINAL / "lowercase.fa.gz"
    dst = tmp_path / "reads.fasta"
    shutil.copy(src, dst)
    out = [tmp_path / "c.fa", tmp_path / "n.fa", tmp_path / "p.faa"]
    preprocess(dst, 500, *out)
    assert out[0].read_bytes() == (ORIGINAL / "lowercase.L500.chunked.fa").read_bytes()


def test_an_input_error_in_a_later_batch_leaves_no_outputs(tmp_path, monkeypatch):
    """With worker processes the records are still read (and refused) here, in order: the
    same one-line error as with one process, and no output written."""
    from virnucflow.errors import InputError

    monkeypatch.setattr("virnucflow.steps.preprocess.BATCH_BASES", 500)
    good = "".join(f">r{i}\n{'ACGTTGCA' * 40}\n" for i in range(30))
    (tmp_path / "in.fa").write_text(good + ">bad\nACGTXACGT\n" + good.replace(">r", ">s"))
    out = [tmp_path / "chunked.fa", tmp_path / "nt.fa", tmp_path / "aa.faa", tmp_path / "records.tsv"]
    messages = []
    for threads in (1, 3):
        with pytest.raises(InputError) as exc:
            preprocess(tmp_path / "in.fa", 300, *out, threads=threads)
        messages.append(str(exc.value))
        assert not any(p.exists() for p in out)
    assert messages[0] == messages[1]
    assert "'bad'" in messages[0] and "'X'" in messages[0], messages[0]
