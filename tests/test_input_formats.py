"""Inputs as they come: SAM/BAM/CRAM (unaligned and aligned, single and paired), gzip, bzip2, xz and
zstd (recognised from the content), and inputs without records.

The same reads give byte-identical preprocessing in every form; a truncated BAM or zstd file gives
one line and no output; an empty input gives header-only outputs, a warning, and exit status 0.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import zstandard

from .conftest import REPO, run_cli

OUTPUTS = ("c.fa", "nt.fa", "aa.faa", "records.tsv")


def _reads(n: int = 40, seed: int = 3) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"read{i}", "".join(rng.choice(list("ACGT"), int(rng.integers(150, 700))))) for i in range(n)]


def _fastq(reads, suffix: str = "") -> bytes:
    return "".join(f"@{name}{suffix} extra words\n{seq}\n+\n{'F' * len(seq)}\n" for name, seq in reads).encode()


def _preprocess(out: Path, fasta: Path, *extra) -> subprocess.CompletedProcess:
    return run_cli("preprocess", "--fasta", fasta, "--chunk-length", 500, "--chunked", out / "c.fa", "--nucleotide",
                   out / "nt.fa", "--protein", out / "aa.faa", "--records", out / "records.tsv", *extra)


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def _header() -> dict:
    return {"HD": {"VN": "1.6", "SO": "unknown"}}


def _segment(header, name, seq, flag=0, ref=-1, pos=-1, cigar=None):
    a = pysam.AlignedSegment(header)
    a.query_name, a.query_sequence, a.flag = name, seq, flag
    a.reference_id, a.reference_start = ref, pos
    if cigar:
        a.cigarstring, a.mapping_quality = cigar, 60
    a.query_qualities = pysam.qualitystring_to_array("F" * len(seq))
    return a


def _ubam(path: Path, reads, mates=None) -> Path:
    """Unaligned BAM (as ``samtools import``): single reads, or each pair's mates next to each other."""
    with pysam.AlignmentFile(str(path), "wb", header=_header()) as f:
        for k, (name, seq) in enumerate(reads):
            if mates is None:
                f.write(_segment(f.header, name, seq, flag=4))
            else:
                f.write(_segment(f.header, name, seq, flag=1 | 4 | 8 | 64))
                f.write(_segment(f.header, name, mates[k][1], flag=1 | 4 | 8 | 128))
    return path


def _revcomp(seq: str) -> str:
    return seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]


@pytest.fixture(scope="module")
def fastq_reference(tmp_path_factory):
    """Preprocessing of the reads as FASTQ.gz, single and paired: what every other form must equal."""
    root = tmp_path_factory.mktemp("formats")
    reads, mates = _reads(), _reads(seed=4)
    single, r1, r2 = root / "reads.fq.gz", root / "R1.fq.gz", root / "R2.fq.gz"
    single.write_bytes(gzip.compress(_fastq(reads)))
    r1.write_bytes(gzip.compress(_fastq(reads, "/1")))
    r2.write_bytes(gzip.compress(_fastq(mates, "/2")))
    for name, args in (("single", (single,)), ("paired", (r1, "--mate2", r2))):
        (root / name).mkdir()
        res = _preprocess(root / name, *args)
        assert res.returncode == 0, res.stderr
    return root, reads, mates


@pytest.mark.parametrize("form", ["bz2", "xz", "zst", "ubam", "sam", "aligned_bam"])
def test_the_same_reads_in_any_form_give_byte_identical_preprocessing(fastq_reference, tmp_path, form):
    root, reads, _ = fastq_reference
    plain = _fastq(reads)
    path = tmp_path / "reads.data"  # the name says nothing: the content decides
    if form == "bz2":
        path.write_bytes(bz2.compress(plain))
    elif form == "xz":
        path.write_bytes(lzma.compress(plain))
    elif form == "zst":
        path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(plain))
    elif form == "ubam":
        _ubam(path, reads)
    elif form == "sam":
        with pysam.AlignmentFile(str(path), "w", header=_header()) as f:
            for name, seq in reads:
                f.write(_segment(f.header, name, seq, flag=4))
    else:  # aligned, sorted by nothing: forward, reverse (stored reverse-complemented), unmapped; plus a
        # secondary and a supplementary record that must be skipped
        header = {"HD": {"VN": "1.6"}, "SQ": [{"SN": "chr1", "LN": 100000}]}
        with pysam.AlignmentFile(str(path), "wb", header=header) as f:
            for k, (name, seq) in enumerate(reads):
                if k % 3 == 0:
                    f.write(_segment(f.header, name, seq, flag=0, ref=0, pos=100 * k, cigar=f"{len(seq)}M"))
                elif k % 3 == 1:
                    f.write(_segment(f.header, name, _revcomp(seq), flag=16, ref=0, pos=100 * k, cigar=f"{len(seq)}M"))
                else:
                    f.write(_segment(f.header, name, seq, flag=4))
                if k == 5:
                    f.write(_segment(f.header, name, seq[:50], flag=256, ref=0, pos=7, cigar="50M"))
                    f.write(_segment(f.header, name, seq[:60], flag=2048, ref=0, pos=9, cigar="60M"))
    res = _preprocess(tmp_path, path)
    assert res.returncode == 0, res.stderr
    assert _outputs(tmp_path) == _outputs(root / "single")
    if form == "aligned_bam":
        assert f"{path}: 27 of 40 primary reads are aligned; all are read" in res.stderr
        assert f"{path}: 2 secondary or supplementary records skipped" in res.stderr


def test_paired_unaligned_bam_equals_the_two_fastq_files(fastq_reference, tmp_path):
    root, reads, mates = fastq_reference
    bam = _ubam(tmp_path / "pairs.bam", reads, mates)
    res = _preprocess(tmp_path, bam)
    assert res.returncode == 0, res.stderr
    assert _outputs(tmp_path) == _outputs(root / "paired")
    assert (tmp_path / "records.tsv").read_text().splitlines()[:3] == [
        "record_id\tlength\tchunks\tframes\tpair", *[l for l in (root / "paired" / "records.tsv").read_text().splitlines()[1:3]]]


def test_a_paired_bam_sorted_by_position_is_refused(tmp_path):
    reads, mates = _reads(4), _reads(4, seed=9)
    with pysam.AlignmentFile(str(tmp_path / "sorted.bam"), "wb", header=_header()) as f:
        for name, seq in reads:
            f.write(_segment(f.header, name, seq, flag=1 | 4 | 8 | 64))
        for name, seq in mates:
            f.write(_segment(f.header, reads[0][0] if name == mates[0][0] else name, seq, flag=1 | 4 | 8 | 128))
    res = _preprocess(tmp_path / "out", tmp_path / "sorted.bam")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"virnucflow: error: {tmp_path / 'sorted.bam'}: the mates of pair 'read0' are not next to each other (a file "
        "sorted by position?); group them first: samtools collate -o collated.bam in.bam")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("form", ["bam", "zst", "xz", "bz2"])
def test_a_truncated_bam_or_compressed_file_is_one_line_and_leaves_nothing(tmp_path, form):
    reads = _reads(400)
    path = tmp_path / f"cut.{form}"
    if form == "bam":
        _ubam(path, reads)
    else:
        pack = {"zst": zstandard.ZstdCompressor(write_checksum=True).compress, "xz": lzma.compress,
                "bz2": bz2.compress}[form]
        path.write_bytes(pack(_fastq(reads)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    res = _preprocess(tmp_path / "out", path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    name = {"bam": "BAM", "zst": "zstd", "xz": "xz", "bz2": "bzip2"}[form]
    if form == "bam":
        assert last.startswith(f"virnucflow: error: {path}: truncated or corrupt BAM file")
        assert last.endswith("check it (samtools quickcheck) or fetch it again")
    else:
        assert last.startswith(f"virnucflow: error: {path}: truncated {name} file: cannot read")
        assert last.endswith(f"check the file ({name} -t) or fetch it again")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_inputs_without_records_give_header_only_outputs_and_a_warning(tmp_path):
    empty_fa, empty_fq = tmp_path / "empty.fa", tmp_path / "empty.fq.gz"
    empty_fa.write_bytes(b"")
    empty_fq.write_bytes(gzip.compress(b""))
    with pysam.AlignmentFile(str(tmp_path / "header.bam"), "wb", header=_header()):
        pass
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\tfasta\nfa\t{empty_fa}\nfq\t{empty_fq}\nbam\t{tmp_path / 'header.bam'}\n"
                     f"ctl\t{REPO / 'resources' / 'demo' / 'synthetic_controls.fa.gz'}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", tmp_path,
                          "--cores", "2", "--configfile", REPO / "config" / "demo.yaml", "--config", f"samples={sheet}"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    banner = "# DEMO MODELS (random weights, built by VirNucFlow for testing): these scores and calls mean nothing\n"
    expected = {
        "prediction_results.txt": banner + "Sequence_ID\tPrediction\tscore1\tscore2\n",
        "prediction_results_highestscore.csv": banner + "Modified_ID\tIs_Virus\n",
        "summary.tsv": banner + "sequence_id\tlength\tchunks\tframes_scored\tchunks_scored\tviral_chunks\t"
                                "viral_chunk_fraction\tmax_viral_score\tcall\n",
        "windows.bed": "",
        "windows.tsv": "sequence_id\tstart\tend\twindow_id\tF1\tF2\tF3\tR1\tR2\tR3\tmax_viral_score\tis_viral\n",
    }
    for sample, path in (("fa", empty_fa), ("fq", empty_fq), ("bam", tmp_path / "header.bam")):
        for name, text in expected.items():
            assert (tmp_path / "results" / sample / name).read_text() == text, (sample, name)
        log = (tmp_path / "logs" / sample / "preprocess.log").read_text()
        assert f"WARNING {path}: no sequences (an empty input): this sample's outputs will hold headers only" in log
    inputs = (tmp_path / "results" / "run" / "inputs.tsv").read_text().splitlines()
    notes = {row.split("\t")[0]: row.split("\t")[-1] for row in inputs[1:]}
    assert notes == {"fa": "no sequences: outputs hold headers only", "fq": "no sequences: outputs hold headers only",
                     "bam": "no sequences: outputs hold headers only", "ctl": ""}
    assert (tmp_path / "results" / "ctl" / "summary.tsv").read_text().count("\n") == 12  # banner, header, 10 records
