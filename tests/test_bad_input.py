"""Every bad FASTA input ends with one clear line, exit status 1 and no outputs."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess

import pytest

from .conftest import run_cli, sample_sheet_error


def _preprocess(tmp_path, fasta):
    out = tmp_path / "out"
    res = run_cli(
        "preprocess", "--fasta", fasta, "--chunk-length", 500,
        "--chunked", out / "chunked.fa", "--nucleotide", out / "nt.fa",
        "--protein", out / "aa.faa", "--records", out / "records.tsv",
    )
    return res, out


def _assert_fails(res, out, expected):
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1] == f"virnucflow: error: {expected}"
    assert "Traceback" not in res.stderr
    assert not out.exists() or list(out.iterdir()) == [], "outputs left behind"


def _write(tmp_path, name, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


GOOD = b">seq1 first\nATGGCTAGCAAAGGT\n"

CASES = {
    # FASTQ is read (tests/test_reads.py); text that is neither is refused
    "neither_fasta_nor_fastq": (
        b"read1\tACGT\n",
        "{p}: not a FASTA file: line 1 comes before any '>' header (starts with b'read1\\tACGT\\n')",
    ),
    "not_fasta_text": (
        b"hello world\n>x\nACGT\n",
        "{p}: not a FASTA file: line 1 comes before any '>' header (starts with b'hello world\\n')",
    ),
    "duplicate_ids": (
        GOOD + b">seq2\nACGT\n>seq1 again\nACGT\n",
        "{p}: duplicate sequence ID 'seq1' (lines 1 and 5); IDs must be unique within a sample",
    ),
    "non_iupac_character": (
        GOOD + b">seq2\nACGTACGT\nACGXACGT\n",
        "{p}: record 'seq2' (line 5): character 'X' is not an IUPAC nucleotide code (allowed: ACGTURYSWKMBDHVN, any case)",
    ),
    "protein_fasta": (
        b">p1\nMKVLAAGIVGLLLA\n",  # M, K and V are IUPAC codes; L is the first that is not
        "{p}: record 'p1' (line 2): character 'L' is not an IUPAC nucleotide code (allowed: ACGTURYSWKMBDHVN, any case)",
    ),
    "gap_character": (
        b">a\nACGT-ACGT\n",
        "{p}: record 'a' (line 2): character '-' is not an IUPAC nucleotide code (allowed: ACGTURYSWKMBDHVN, any case)",
    ),
    "empty_header": (b">\nACGT\n", "{p}: line 1: record header '>' has no sequence ID"),
    "record_without_sequence": (
        GOOD + b">empty\n>seq3\nACGT\n",
        "{p}: record 'empty' (line 3) has no sequence",
    ),
    "binary_header": (b">\xff\xfe\nACGT\n", "{p}: line 1: header is not valid UTF-8 text"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_fasta(tmp_path, name):
    content, expected = CASES[name]
    p = _write(tmp_path, f"{name}.fa", content)
    res, out = _preprocess(tmp_path, p)
    _assert_fails(res, out, expected.format(p=p))


def test_bad_fasta_inside_gzip(tmp_path):
    p = tmp_path / "dups.fa.gz"
    p.write_bytes(gzip.compress(GOOD + GOOD, mtime=0))
    res, out = _preprocess(tmp_path, p)
    _assert_fails(res, out, f"{p}: duplicate sequence ID 'seq1' (lines 1 and 3); IDs must be unique within a sample")


def test_truncated_gzip(tmp_path):
    p = tmp_path / "cut.fa.gz"
    data = gzip.compress(GOOD * 50, mtime=0)
    p.write_bytes(data[: len(data) // 2])
    res, out = _preprocess(tmp_path, p)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"virnucflow: error: {p}: truncated gzip file: cannot read")
    assert last.endswith("(the compressed data stops mid-stream); check the file (gzip -t) or fetch it again")
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"], ids=["empty_file", "blank_lines_only"])
def test_an_input_without_records_is_not_an_error(tmp_path, content):
    """No records (an empty split of a larger run): header-only outputs and a warning, exit 0
    (tests/test_input_formats.py runs it through the whole workflow)."""
    p = _write(tmp_path, "none.fa", content)
    res, out = _preprocess(tmp_path, p)
    assert res.returncode == 0, res.stderr
    assert f"WARNING {p}: no sequences (an empty input): this sample's outputs will hold headers only" in res.stderr
    assert (out / "records.tsv").read_text() == "record_id\tlength\tchunks\tframes\n"
    assert (out / "nt.fa").read_text() == (out / "aa.faa").read_text() == (out / "chunked.fa").read_text() == ""


def test_missing_file(tmp_path):
    p = tmp_path / "nope.fa"
    res, out = _preprocess(tmp_path, p)
    _assert_fails(res, out, f"{p}: file not found")


def test_directory_instead_of_file(tmp_path):
    p = tmp_path / "adir"
    p.mkdir()
    res, out = _preprocess(tmp_path, p)
    _assert_fails(res, out, f"{p}: is a directory, not a FASTA file")


def test_unreadable_file_as_any_user(tmp_path):
    """A file that opens but cannot be read (root reads any mode, so use a special file)."""
    p = tmp_path / "unreadable.fa"
    p.symlink_to("/proc/self/mem")  # reading it from offset 0 fails with EIO
    res, out = _preprocess(tmp_path, p)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"virnucflow: error: {p}: cannot read file (Input/output error)"
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    p = _write(tmp_path, "locked.fa", GOOD)
    p.chmod(0)
    res, out = _preprocess(tmp_path, p)
    _assert_fails(res, out, f"{p}: file is not readable (permission denied)")


def test_error_after_many_good_records_leaves_nothing(tmp_path):
    """A problem deep in the file must not leave the outputs written so far."""
    body = b"".join(b">r%d\n%s\n" % (i, b"ATG" * 200) for i in range(300))
    p = _write(tmp_path, "late.fa", body + b">bad\nAC*GT\n")
    res, out = _preprocess(tmp_path, p)
    _assert_fails(
        res, out,
        f"{p}: record 'bad' (line 602): character '*' is not an IUPAC nucleotide code (allowed: ACGTURYSWKMBDHVN, any case)",
    )


# ---------------------------------------------------------------- failures that used to end in tracebacks (issue 8)

BIG = b"".join(b">r%d\n%s\n" % (i, b"ACGTTGCA" * 50) for i in range(2000))


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(BIG, mtime=0))
    data[200:210] = b"\xff" * 10  # damage the deflate stream (zlib.error, not a truncation)
    p = _write(tmp_path, "corrupt.fa.gz", bytes(data))
    res, out = _preprocess(tmp_path, p)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    # the decompressor (ISA-L, on a thread ahead of the parser) says what is wrong, not at which line
    assert last.startswith(f"virnucflow: error: {p}: corrupt gzip file: cannot read (")
    assert last.endswith("); check the file (gzip -t) or fetch it again")
    assert not out.exists() or list(out.iterdir()) == []


@contextlib.contextmanager
def _tmpfs(path, options):
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_disk_full(tmp_path):
    p = _write(tmp_path, "big.fa", BIG)
    with _tmpfs(tmp_path / "small", "size=64k") as small:
        out = small / "out"
        res = run_cli("preprocess", "--fasta", p, "--chunk-length", 500, "--chunked", out / "chunked.fa",
                      "--nucleotide", out / "nt.fa", "--protein", out / "aa.faa", "--records", out / "records.tsv")
        _assert_fails(res, out, f"{out}: cannot write output (No space left on device)")


def test_read_only_output_folder(tmp_path):
    p = _write(tmp_path, "good.fa", GOOD)
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        out = ro / "results"
        res = run_cli("preprocess", "--fasta", p, "--chunk-length", 500, "--chunked", out / "chunked.fa",
                      "--nucleotide", out / "nt.fa", "--protein", out / "aa.faa")
        _assert_fails(res, out, f"{out}: cannot write output (Read-only file system)")


def test_directory_in_the_sample_sheet(tmp_path):
    (tmp_path / "reads").mkdir()
    sheet, message = sample_sheet_error(tmp_path, "s1", tmp_path / "reads")
    assert message == f"{sheet}: line 2: sample 's1': FASTA file {tmp_path / 'reads'} is a directory, not a file"


def test_classifier_given_as_the_esm2_model(tmp_path):
    """PyTorch's advice to load the file unsafely ("will likely succeed") must not reach users."""
    from virnucflow.steps.demo import build_demo_models

    build_demo_models({"esm2": tmp_path / "esm2.pt", "dnabert_s": tmp_path / "dnabert", "classifier": tmp_path / "clf.pth"}, seed=0)
    out = tmp_path / "results"
    res = run_cli("check-model", "--kind", "esm2", "--spec", tmp_path / "clf.pth", "--no-download",
                  "--out", out / "esm2.json")
    _assert_fails(res, out, f"{tmp_path / 'clf.pth'}: refused to load: it is a pickled Python module (a VirNucPro "
                            "classifier .pth?), not model weights: __main__.MLPClassifier, "
                            "torch.nn.modules.batchnorm.BatchNorm1d, torch.nn.modules.dropout.Dropout, "
                            "torch.nn.modules.linear.Linear")
    assert "weights_only" not in res.stderr and "likely succeed" not in res.stderr
