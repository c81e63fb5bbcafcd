"""Streaming, validating FASTA reader (plain or compressed: :mod:`virnucflow.io.opening`).

Records are parsed as Biopython's ``SeqIO.parse(path, "fasta")`` parses them,
which is what the original VirNucPro used: the ID is the first word of the
header, the description the whole header without '>', and spaces, tabs and
carriage returns inside sequence lines are dropped. Unlike Biopython, every
problem a user can make is reported as one :class:`InputError` naming the file
and the record or line: a missing or unreadable file, text that is not FASTA, a
header with CR-only line ends or control characters, a record with an empty
header or no sequence, a duplicate ID, or a character outside the IUPAC
nucleotide codes. A file without records (empty, blank lines only) yields none:
the workflow writes header-only outputs for it. Lowercase is kept here (the
original writes its chunked FASTA in the input's case); callers uppercase.

Memory is bounded by the longest record, not by the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from virnucflow.errors import InputError
from virnucflow.io.opening import DECOMPRESSION_ERRORS, open_input, read_error

#: IUPAC nucleotide codes (with U for RNA), both cases.
IUPAC_NUCLEOTIDES = b"ACGTURYSWKMBDHVN"
_ALLOWED = IUPAC_NUCLEOTIDES + IUPAC_NUCLEOTIDES.lower()
# Biopython drops these anywhere inside sequence lines.
_DROPPED = b" \t\r\n"
# Bytes a header may not hold: control characters other than tab (HDF5 cannot store NUL in an ID).
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str
    seq: str  # input case, whitespace removed
    line: int  # 1-based line number of the header


def check_header(path: Path, header: bytes, line: int) -> None:
    """Refuse classic-Mac (CR-only) line ends and control characters in a header line."""
    text = header.rstrip(b"\r\n")
    if b"\r" in text:
        raise InputError(f"{path}: line {line}: carriage returns without line feeds (old Mac line ends, "
                         "CR only); convert the file, e.g. tr '\\r' '\\n' < in.fa > out.fa")
    if len(text.translate(None, _CONTROL)) != len(text):
        bad = next(bytes([c]) for c in text if c in _CONTROL)
        raise InputError(f"{path}: line {line}: the header holds control character {bad!r}; sequence IDs "
                         "and descriptions must be printable text")


def read_fasta(path: str | os.PathLike, check_duplicates: bool = True) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file, validating as it goes.

    The generator raises :class:`InputError` at the first problem; callers that
    write outputs must therefore write them atomically (see ``atomic``).
    """
    p = Path(path)
    seen: dict[str, int] = {}
    header: bytes | None = None
    header_line = 0
    parts: list[bytes] = []
    lineno = 0
    with open_input(p) as handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                if raw[:1] == b">":
                    check_header(p, raw, lineno)
                    if header is not None:
                        yield _make_record(p, header, header_line, parts, seen, check_duplicates)
                    header, header_line, parts = raw, lineno, []
                    continue
                line = raw.translate(None, _DROPPED)
                if not line:
                    continue
                if header is None:
                    raise InputError(
                        f"{p}: not a FASTA file: line {lineno} comes before any '>' header "
                        f"(starts with {raw[:20]!r})"
                    )
                bad = line.translate(None, _ALLOWED)
                if bad:
                    raise bad_character(p, header, header_line, lineno, bad)
                parts.append(line)
        except DECOMPRESSION_ERRORS as exc:
            raise read_error(p, exc, lineno) from None
    if header is not None:
        yield _make_record(p, header, header_line, parts, seen, check_duplicates)


# Shared by the FASTA and FASTQ readers (virnucflow.io.reads): IDs, checks, records.


def header_id(path: Path, header: bytes, line: int) -> str:
    """The record ID: the first word of a ``>`` (FASTA) or ``@`` (FASTQ) header."""
    try:
        title = header[1:].decode("utf-8").rstrip()
    except UnicodeDecodeError:
        raise InputError(f"{path}: line {line}: header is not valid UTF-8 text") from None
    words = title.split(None, 1)
    if not words:
        raise InputError(f"{path}: line {line}: record header {header[:1].decode('latin-1')!r} has no sequence ID")
    return words[0]


def bad_character(path: Path, header: bytes, header_line: int, line: int, bad: bytes) -> InputError:
    """The error for a sequence line holding ``bad`` (its non-IUPAC characters)."""
    rid = header_id(path, header, header_line)
    return InputError(
        f"{path}: record '{rid}' (line {line}): character {bad[:1].decode('latin-1')!r} is not an "
        "IUPAC nucleotide code (allowed: ACGTURYSWKMBDHVN, any case)"
    )


def check_unique(path: Path, rid: str, line: int, seen: dict[str, int]) -> None:
    """Refuse a record ID seen before in this file (``seen``: ID -> header line)."""
    first = seen.get(rid)
    if first is not None:
        raise InputError(
            f"{path}: duplicate sequence ID '{rid}' (lines {first} and {line}); "
            "IDs must be unique within a sample"
        )
    seen[rid] = line


def make_record(path: Path, rid: str, header: bytes, line: int, seq: bytes) -> FastaRecord:
    """A record from its header and its sequence (whitespace removed), refusing an empty sequence."""
    if not seq:
        raise InputError(f"{path}: record '{rid}' (line {line}) has no sequence")
    return FastaRecord(rid, header[1:].decode("utf-8").rstrip(), seq.decode("ascii"), line)


def _make_record(
    path: Path,
    header: bytes,
    line: int,
    parts: list[bytes],
    seen: dict[str, int],
    check_duplicates: bool,
) -> FastaRecord:
    rid = header_id(path, header, line)
    if check_duplicates:
        check_unique(path, rid, line, seen)
    return make_record(path, rid, header, line, b"".join(parts))
