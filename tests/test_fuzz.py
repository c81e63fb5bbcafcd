"""Property-based fuzzing of what reads user files: for any bytes (or any YAML value) the result is
records (a sheet, a config) or one known error (:class:`VirNucFlowError`), never another exception.

Bounded and deterministic in the normal test command (``derandomize``, no example database);
``VIRNUCFLOW_FUZZ_EXAMPLES=100000 pytest tests/test_fuzz.py`` is the long run.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virnucflow.errors import VirNucFlowError
from virnucflow.io.fasta import IUPAC_NUCLEOTIDES
from virnucflow.io.reads import read_pairs, read_sequences
from virnucflow.io.samples import read_sample_sheet

FUZZ = settings(max_examples=int(os.environ.get("VIRNUCFLOW_FUZZ_EXAMPLES", "300")), derandomize=True,
                database=None, deadline=None, suppress_health_check=list(HealthCheck))

# Pieces that make the readers' branches: headers, separators, sequence, qualities, line ends
# (LF, CRLF, CR), BOM, gzip magic, NUL and other bytes.
PIECES = [b">", b">r1", b">r2 desc", b"@", b"@r1", b"@r2/1", b"@r2/2", b"+", b"+r1", b"ACGT", b"acgtn", b"RYKM",
          b"U", b"X", b"-", b"*", b"IIII", b"\n", b"\r\n", b"\r", b"\t", b" ", b"\x00", b"\xef\xbb\xbf", b"\x1f\x8b",
          b"\xff", b"\xc3\xa9", b"#", b"\n\n"]
text_like = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=6)), max_size=40).map(b"".join)


@st.composite
def files(draw) -> bytes:
    body = draw(st.one_of(text_like, st.binary(max_size=300)))
    how = draw(st.sampled_from(["plain", "gzip", "gzip-cut", "gzip-flipped"]))
    if how == "plain":
        return body
    packed = bytearray(gzip.compress(body, mtime=0))
    if how == "gzip-cut":
        return bytes(packed[: draw(st.integers(0, len(packed)))])
    if how == "gzip-flipped":
        i = draw(st.integers(0, len(packed) - 1))
        packed[i] ^= draw(st.integers(1, 255))
    return bytes(packed)


def _file(directory: str, name: str, data: bytes) -> Path:
    p = Path(directory) / name
    p.write_bytes(data)
    return p


def _check_records(records) -> None:
    allowed = set((IUPAC_NUCLEOTIDES + IUPAC_NUCLEOTIDES.lower()).decode())
    for r in records:
        assert r.id and not any(c.isspace() for c in r.id)
        assert r.seq and set(r.seq) <= allowed


@FUZZ
@given(files())
def test_any_bytes_read_as_sequences_give_records_or_one_known_error(data):
    with tempfile.TemporaryDirectory() as d:
        try:
            _check_records(list(read_sequences(_file(d, "in", data))))
        except VirNucFlowError:
            pass


@FUZZ
@given(files(), files())
def test_any_two_files_read_as_mates_give_records_or_one_known_error(a, b):
    with tempfile.TemporaryDirectory() as d:
        try:
            _check_records(list(read_pairs(_file(d, "r1", a), _file(d, "r2", b))))
        except VirNucFlowError:
            pass


SHEET_PIECES = [b"sample", b"fasta", b"reads", b"mate2", b"\t", b"\n", b"\r\n", b"\r", b"s1", b"s 2", b".", b"..",
                b"models", b"#", b'"', b"x.fa", b"\xef\xbb\xbf", b"\x00", b"\xff", b"-a"]


@FUZZ
@given(st.one_of(st.lists(st.one_of(st.sampled_from(SHEET_PIECES), st.binary(max_size=4)), max_size=30).map(b"".join),
                 st.binary(max_size=200)))
def test_any_bytes_read_as_a_sample_sheet_give_samples_or_one_known_error(data):
    with tempfile.TemporaryDirectory() as d:
        try:
            samples = read_sample_sheet(_file(d, "s.tsv", data), check_files=False)
        except VirNucFlowError:
            return
        assert samples and all(s.name and s.fasta for s in samples)


KEYS = ["samples", "chunk_length", "shards", "models", "esm2", "classifier", "embedding", "precision", "packing",
        "calling", "min_windows", "resources", "embed", "mem_mb", "runtime", "gpu", "selftest", "fp32", "output"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["auto", "fp16", "fp32", "bundled", "x.tsv", "500"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4)),
    max_leaves=12)


@FUZZ
@given(st.one_of(values.map(lambda v: yaml.safe_dump(v).encode()),
                 st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(lambda v: yaml.safe_dump(v).encode()),
                 st.binary(max_size=120)))
def test_any_yaml_read_as_a_config_gives_a_config_or_one_known_error(data):
    from virnucflow.planning.config import load_config

    with tempfile.TemporaryDirectory() as d:
        try:
            config = load_config(_file(d, "c.yaml", data))
        except VirNucFlowError:
            return
        assert isinstance(config, dict) and isinstance(config["chunk_length"], int)
