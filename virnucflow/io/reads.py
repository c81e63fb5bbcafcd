"""Sequence input in any of the forms reads come in: FASTA or FASTQ, plain or gzip.

The format is detected from the content (the first non-blank byte: ``>`` for
FASTA, ``@`` for FASTQ), never from the file name, and gzip from its magic
bytes. FASTQ records are parsed as four-line records (header, sequence, ``+``,
quality), streamed one at a time, and given the same IDs (first word of the
header), the same character checks and the same one-line errors as FASTA, so
preprocessing a FASTQ file is byte-identical to preprocessing the same records
written as FASTA.

Paired reads (two files, mate 1 and mate 2, in the same order) become one
sequence per mate. Mate IDs are ``{pair}/1`` and ``{pair}/2``, where ``pair``
is the read's ID with a trailing ``/1`` or ``/2`` removed; the pair IDs of the
two files must agree record by record. VirNucPro's own ID handling keeps these
IDs intact: windows are ``{pair}/1_chunk_{k}``, frames add two characters,
and the record of a window is recovered with ``rsplit('_chunk_', 1)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from virnucflow.errors import InputError
from virnucflow.io.fasta import (
    _ALLOWED,
    _DROPPED,
    FastaRecord,
    header_id,
    bad_character,
    check_header,
    check_unique,
    make_record,
    read_fasta,
)
from virnucflow.io.opening import DECOMPRESSION_ERRORS, open_input, read_error

MATE_SUFFIXES = ("/1", "/2")


def detect_format(path: str | os.PathLike) -> str:
    """``fasta``, ``fastq``, ``sam``, ``bam`` or ``cram`` from the (decompressed) file's first bytes:
    an alignment file's magic or header, else the first non-blank byte (``@``: FASTQ)."""
    from virnucflow.io.alignments import alignment_format

    p = Path(path)
    with open_input(p, ahead=False) as handle:
        try:
            aligned = alignment_format(p, handle.peek(4)[:4])
            if aligned:
                return aligned
            for raw in handle:
                stripped = raw.strip()
                if stripped:
                    first = stripped[:1]
                    if first == b"@":
                        return "fastq"
                    return "fasta"  # '>' or not FASTA at all: read_fasta says which
        except DECOMPRESSION_ERRORS as exc:
            raise read_error(p, exc) from None
    return "fasta"  # no records: read_fasta yields none


def paired_input(path: str | os.PathLike) -> bool:
    """Whether one file holds both mates of paired reads (SAM/BAM/CRAM with paired flags)."""
    from virnucflow.io.alignments import is_paired

    fmt = detect_format(path)
    return fmt in ("sam", "bam", "cram") and is_paired(path, fmt)


def read_sequences(path: str | os.PathLike, check_duplicates: bool = True) -> Iterator[FastaRecord]:
    """Records of a FASTA, FASTQ, SAM, BAM or CRAM file (plain or compressed), validated as they stream."""
    fmt = detect_format(path)
    if fmt == "fastq":
        return read_fastq(path, check_duplicates)
    if fmt in ("sam", "bam", "cram"):
        from virnucflow.io.alignments import read_alignments

        return read_alignments(path, fmt, check_duplicates)
    return read_fasta(path, check_duplicates)


def read_fastq(path: str | os.PathLike, check_duplicates: bool = True) -> Iterator[FastaRecord]:
    """Yield the records of a four-line FASTQ file, validating as it goes.

    Raises :class:`InputError` at the first problem: a header that does not
    start with ``@``, a record cut short by the end of the file, a missing
    ``+`` line, a quality string whose length differs from the sequence's, a
    non-IUPAC character, an empty sequence or a duplicate ID.
    """
    p = Path(path)
    seen: dict[str, int] = {}
    lineno = 0
    with open_input(p) as handle:
        try:
            lines = iter(handle)
            for header in lines:
                lineno += 1
                if not header.strip():
                    continue
                start = lineno
                if header[:1] != b"@":
                    raise InputError(
                        f"{p}: not a FASTQ record at line {lineno}: expected a '@' header, "
                        f"found {header[:20]!r}"
                    )
                check_header(p, header, start)
                rid = header_id(p, header, start)
                seq = next(lines, None)
                plus = next(lines, None) if seq is not None else None
                qual = next(lines, None) if plus is not None else None
                if qual is None:
                    raise InputError(f"{p}: record '{rid}' (line {start}) is truncated: the file ends inside it")
                lineno += 3
                if plus[:1] != b"+":
                    raise InputError(
                        f"{p}: record '{rid}' (line {start}): line {start + 2} should be the '+' "
                        f"separator, found '{plus[:20].decode('utf-8', 'replace').rstrip()}'"
                    )
                seq = seq.translate(None, _DROPPED)
                qual = qual.rstrip(b"\r\n")
                if len(qual) != len(seq):
                    raise InputError(
                        f"{p}: record '{rid}' (line {start}): quality has {len(qual)} characters "
                        f"but the sequence has {len(seq)}"
                    )
                if not seq:
                    raise InputError(f"{p}: record '{rid}' (line {start}) has no sequence")
                bad = seq.translate(None, _ALLOWED)
                if bad:
                    raise bad_character(p, header, start, start + 1, bad)
                if check_duplicates:
                    check_unique(p, rid, start, seen)
                yield make_record(p, rid, header, start, seq)
        except DECOMPRESSION_ERRORS as exc:
            raise read_error(p, exc, lineno) from None


def pair_id(read_id: str) -> str:
    """The pair's ID: the read ID without a trailing ``/1`` or ``/2``."""
    return read_id[:-2] if read_id.endswith(MATE_SUFFIXES) else read_id


def read_pairs(mate1: str | os.PathLike, mate2: str | os.PathLike) -> Iterator[FastaRecord]:
    """Mate 1 and mate 2 of each pair, in turn, with IDs ``{pair}/1`` and ``{pair}/2``.

    Both files are streamed in step; their pair IDs must agree record by record
    and they must hold the same number of records.
    """
    it1, it2 = read_sequences(mate1), read_sequences(mate2)
    n = 0
    seen: dict[str, int] = {}
    while True:
        r1, r2 = next(it1, None), next(it2, None)
        if r1 is None and r2 is None:
            return
        n += 1
        if r1 is None or r2 is None:
            short, other = (mate1, mate2) if r1 is None else (mate2, mate1)
            raise InputError(f"{short}: ends after {n - 1} reads, but its mate file {other} has more")
        if n == 1 and (r1.id.endswith("/2") or r2.id.endswith("/1")):
            which, path, rid = (1, mate1, r1.id) if r1.id.endswith("/2") else (2, mate2, r2.id)
            raise InputError(f"{path}: read 1 is '{rid}', named as mate {3 - which}, but the file is given as mate "
                             f"{which}; swap fasta and mate2 in the sample sheet (or give the right files)")
        p1, p2 = pair_id(r1.id), pair_id(r2.id)
        if p1 != p2:
            raise InputError(
                f"{mate2}: read {n} (line {r2.line}) is '{r2.id}' but its mate in {mate1} is '{r1.id}'; "
                "mate files must list the pairs in the same order"
            )
        if p1 in seen:
            raise InputError(f"{mate1}: duplicate pair ID '{p1}' (reads {seen[p1]} and {n})")
        seen[p1] = n
        yield FastaRecord(f"{p1}/1", r1.description, r1.seq, r1.line)
        yield FastaRecord(f"{p1}/2", r2.description, r2.seq, r2.line)
