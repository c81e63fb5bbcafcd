"""FASTQ and paired-read input: same preprocessing as FASTA, one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnucflow.io.fasta import read_fasta
from virnucflow.io.reads import read_pairs, read_sequences

from .conftest import ORIGINAL, run_cli


def _fastq(records, qual="I") -> str:
    return "".join(f"@{r.description}\n{r.seq}\n+\n{qual * len(r.seq)}\n" for r in records)


def _preprocess(tmp_path: Path, name: str, *inputs: Path, chunk: int = 300):
    out = tmp_path / name
    args = ["preprocess", "--fasta", inputs[0], "--chunk-length", chunk, "--chunked", out / "chunked.fa",
            "--nucleotide", out / "nuc.fa", "--protein", out / "prot.faa", "--records", out / "records.tsv"]
    if len(inputs) > 1:
        args += ["--mate2", inputs[1]]
    return run_cli(*args), out


@pytest.mark.parametrize("source", ["both_strands", "lowercase", "iupac", "edge_lengths"])
def test_fastq_preprocessing_is_byte_identical_to_fasta(tmp_path, source):
    fasta = ORIGINAL / f"{source}.fa"
    if not fasta.exists():
        fasta = tmp_path / f"{source}.fa"
        fasta.write_bytes(gzip.decompress((ORIGINAL / f"{source}.fa.gz").read_bytes()))
    text = _fastq(list(read_fasta(fasta)))
    inputs = {
        "fastq": ("reads.fastq", text.encode()),
        "fastq_gz": ("reads.fastq.gz", gzip.compress(text.encode())),
        "gz_named_fq": ("reads.fq", gzip.compress(text.encode())),
        "fastq_named_txt": ("reads.txt", text.encode()),
    }
    res, ref = _preprocess(tmp_path, "fasta", fasta)
    assert res.returncode == 0, res.stderr
    assert (ref / "chunked.fa").read_bytes() == (ORIGINAL / f"{source}.L300.chunked.fa").read_bytes()
    for name, (filename, data) in inputs.items():
        path = tmp_path / filename
        path.write_bytes(data)
        res, out = _preprocess(tmp_path, name, path)
        assert res.returncode == 0, res.stderr
        for f in ("chunked.fa", "nuc.fa", "prot.faa", "records.tsv"):
            assert (out / f).read_bytes() == (ref / f).read_bytes(), (name, f)


def test_frames_are_counted_in_fastq_as_in_fasta(tmp_path):
    """The count behind `shards: auto` reads FASTQ (plain or gzip) too: it was None for FASTQ,
    so reads always got one shard."""
    from virnucflow.planning.inputs import count_frames, input_info

    fasta = ORIGINAL / "both_strands.fa"
    text = _fastq(list(read_fasta(fasta)))
    (tmp_path / "r.fq").write_text(text)
    (tmp_path / "r.fq.gz").write_bytes(gzip.compress(text.encode()))
    res, out = _preprocess(tmp_path, "fa", fasta)
    assert res.returncode == 0, res.stderr
    kept = (out / "prot.faa").read_text().count(">")
    assert kept > 10
    for path in (fasta, tmp_path / "r.fq", tmp_path / "r.fq.gz"):
        assert count_frames(path, 300, limit=10**9) == kept, path
        assert count_frames(path, 300, limit=10) == 10, path
    cache = tmp_path / "inputs.json"
    assert input_info(tmp_path / "r.fq.gz", 300, limit=10**9, cache=cache)["frames"] == kept
    # an entry without a count (as FASTQ got before) is counted again
    import json

    entries = json.loads(cache.read_text())
    (entry,) = entries.values()
    entry["frames"]["300"] = [None, 10**9]
    cache.write_text(json.dumps(entries))
    assert input_info(tmp_path / "r.fq.gz", 300, limit=10**9, cache=cache)["frames"] == kept


def test_frames_of_a_large_file_are_extrapolated_from_its_first_windows(tmp_path):
    """Beyond count_frames' exact_windows, the rest of the file is measured in windows, not
    translated: the count is the sampled frames per window times the file's windows."""
    from virnucflow.planning.inputs import count_frames

    fasta = ORIGINAL / "both_strands.fa"
    records = list(read_fasta(fasta))
    exact = count_frames(fasta, 300, limit=10**9)
    windows = sum(-(-len(r.seq) // 300) for r in records)
    # the same records 50 times over: every sample of whole copies has the file's frames per window
    (tmp_path / "x50.fa").write_text("".join(f">c{i}_{r.id}\n{r.seq}\n" for i in range(50) for r in records))
    assert count_frames(tmp_path / "x50.fa", 300, limit=10**9) == 50 * exact  # all within EXACT_WINDOWS
    assert count_frames(tmp_path / "x50.fa", 300, limit=10**9, exact_windows=windows) == 50 * exact
    # a sample that is not representative gives a proportional estimate, never more than the limit
    first = records[0]
    first_frames = count_frames(tmp_path / "x50.fa", 300, limit=10**9, exact_windows=1)
    first_windows = -(-len(first.seq) // 300)
    assert first_frames == round(count_frames_of(first, 300) * 50 * windows / first_windows)
    assert count_frames(tmp_path / "x50.fa", 300, limit=7, exact_windows=1) == min(7, first_frames)


def count_frames_of(record, chunk_length):
    from virnucflow.steps.preprocess import chunk_bounds, identify_frames

    return sum(len(identify_frames("", record.seq[a:b])) for a, b in chunk_bounds(len(record.seq), chunk_length))


def test_fastq_with_crlf_line_ends(tmp_path):
    (tmp_path / "r.fq").write_bytes(b"@r1 some read\r\nACGTN\r\n+\r\nIIIII\r\n")
    assert [(r.id, r.seq) for r in read_sequences(tmp_path / "r.fq")] == [("r1", "ACGTN")]


GOOD = "@r1\nACGTACGT\n+\nIIIIIIII\n"


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD + "@r2\nACGT\n+\n", "record 'r2' (line 5) is truncated: the file ends inside it"),
        (GOOD + "@r2\nACGT\n", "record 'r2' (line 5) is truncated: the file ends inside it"),
        (GOOD + "@r2\nACGT\n+\nIII\n", "record 'r2' (line 5): quality has 3 characters but the sequence has 4"),
        (GOOD + "@r2\nACGT\nIIII\n@r3\n", "record 'r2' (line 5): line 7 should be the '+' separator, found 'IIII'"),
        (GOOD + "r2\nACGT\n+\nIIII\n", "not a FASTQ record at line 5: expected a '@' header, found b'r2\\n'"),
        (GOOD + "@r2\nACGJ\n+\nIIII\n", "record 'r2' (line 6): character 'J' is not an IUPAC nucleotide code"),
        (GOOD + "@r1\nACGT\n+\nIIII\n", "duplicate sequence ID 'r1' (lines 1 and 5); IDs must be unique within a sample"),
        (GOOD + "@r2\n\n+\n\n", "record 'r2' (line 5) has no sequence"),
        (GOOD + "@ \nACGT\n+\nIIII\n", "line 5: record header '@' has no sequence ID"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_fastq_one_line_error_and_no_outputs(tmp_path, text, message, gz):
    path = tmp_path / "bad.fq"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    res, out = _preprocess(tmp_path, "out", path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith(f"virnucflow: error: {path}: {message}"), lines[-1]
    assert not out.exists() or not any(out.iterdir())


def test_paired_reads(tmp_path):
    (tmp_path / "m1.fq").write_text("@p1/1\nATGAAACCCGGGTTT\n+\nIIIIIIIIIIIIIII\n@p2 x\nATGCCC\n+\nIIIIII\n")
    (tmp_path / "m2.fq.gz").write_bytes(gzip.compress(b"@p1/2\nATGTTTAAACCC\n+\nIIIIIIIIIIII\n@p2 y\nATGGGG\n+\nIIIIII\n"))
    assert [r.id for r in read_pairs(tmp_path / "m1.fq", tmp_path / "m2.fq.gz")] == ["p1/1", "p1/2", "p2/1", "p2/2"]
    res, out = _preprocess(tmp_path, "out", tmp_path / "m1.fq", tmp_path / "m2.fq.gz", chunk=9)
    assert res.returncode == 0, res.stderr
    records = [line.split("\t") for line in (out / "records.tsv").read_text().splitlines()]
    assert records[0] == ["record_id", "length", "chunks", "frames", "pair"]
    assert [(r[0], r[1], r[2], r[4]) for r in records[1:]] == [
        ("p1/1", "15", "2", "p1"), ("p1/2", "12", "2", "p1"), ("p2/1", "6", "1", "p2"), ("p2/2", "6", "1", "p2")]
    # the same as the mates written as one FASTA file with these IDs
    (tmp_path / "mates.fa").write_text(
        ">p1/1\nATGAAACCCGGGTTT\n>p1/2\nATGTTTAAACCC\n>p2/1\nATGCCC\n>p2/2\nATGGGG\n")
    res, ref = _preprocess(tmp_path, "ref", tmp_path / "mates.fa", chunk=9)
    for f in ("chunked.fa", "nuc.fa", "prot.faa"):
        assert (out / f).read_bytes() == (ref / f).read_bytes()
    chunk_ids = [line[1:] for line in (out / "chunked.fa").read_text().splitlines() if line.startswith(">")]
    assert chunk_ids == ["p1/1_chunk_1", "p1/1_chunk_2", "p1/2_chunk_1", "p1/2_chunk_2", "p2/1_chunk_1", "p2/2_chunk_1"]


@pytest.mark.parametrize(
    "mate2,message",
    [
        ("@p1/2\nACGT\n+\nIIII\n", "m2.fq: ends after 1 reads, but its mate file {m1} has more"),
        ("@p1/2\nACGT\n+\nIIII\n@p3/2\nACGT\n+\nIIII\n",
         "m2.fq: read 2 (line 5) is 'p3/2' but its mate in {m1} is 'p2/1'; mate files must list the pairs in the same order"),
    ],
)
def test_mismatched_mates(tmp_path, mate2, message):
    m1 = tmp_path / "m1.fq"
    m1.write_text("@p1/1\nACGT\n+\nIIII\n@p2/1\nACGT\n+\nIIII\n")
    (tmp_path / "m2.fq").write_text(mate2)
    res, out = _preprocess(tmp_path, "out", m1, tmp_path / "m2.fq")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"virnucflow: error: {tmp_path}/" + message.format(m1=m1)
    assert not out.exists() or not any(out.iterdir())


def test_a_missing_mate2_is_named_as_the_mate2_file(tmp_path):
    from virnucflow.errors import InputError
    from virnucflow.io.samples import read_sample_sheet

    (tmp_path / "r1.fq").write_text("@p/1\nACGT\n+\nIIII\n")
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\tfasta\tmate2\ns\t{tmp_path / 'r1.fq'}\t{tmp_path / 'r2.fq'}\n")
    with pytest.raises(InputError) as err:
        read_sample_sheet(sheet)
    assert str(err.value) == f"{sheet}: line 2: sample 's': mate2 file {tmp_path / 'r2.fq'} not found"
