"""Streaming, validating FASTA reader (plain or gzip).

Records are parsed as Biopython's ``SeqIO.parse(path, "fasta")`` parses them,
which is what the original VirNucPro used: the ID is the first word of the
header, the description the whole header without '>', and spaces, tabs and
carriage returns inside sequence lines are dropped. Unlike Biopython, every
problem a user can make is reported as one :class:`InputError` naming the file
and the record or line: a missing or unreadable file, an empty file, text that
is not FASTA, a record with an empty header or no sequence, a duplicate ID, or
a character outside the IUPAC nucleotide codes. Lowercase is kept here (the
original writes its chunked FASTA in the input's case); callers uppercase.

Memory is bounded by the longest record, not by the file.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError

#: IUPAC nucleotide codes (with U for RNA), both cases.
IUPAC_NUCLEOTIDES = b"ACGTURYSWKMBDHVN"
_ALLOWED = IUPAC_NUCLEOTIDES + IUPAC_NUCLEOTIDES.lower()
# Biopython drops these anywhere inside sequence lines.
_DROPPED = b" \t\r\n"
_GZIP_MAGIC = b"\x1f\x8b"
#: UTF-8 byte order mark (Excel and Windows editors write it): skipped at the start of a file.
BOM = b"\xef\xbb\xbf"
# Bytes a header may not hold: control characters other than tab (HDF5 cannot store NUL in an ID).
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str
    seq: str  # input case, whitespace removed
    line: int  # 1-based line number of the header


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_maybe_gzip(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for binary reading, transparently gunzipping it, past a UTF-8 byte order mark.

    Raises :class:`InputError` for a missing, unreadable or non-regular file (a pipe or a device:
    the workflow reads each input more than once).
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{p}: is a directory, not a FASTA file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{p}: is {_kind(mode)}, not a regular file: the workflow reads each input more than "
                         "once (to plan the jobs, then to preprocess); save it to a file first")
    try:
        handle = open(p, "rb")
        if handle.peek(2)[:2] == _GZIP_MAGIC:
            handle.close()
            handle = gzip.open(p, "rb")  # type: ignore[assignment]
        if handle.peek(3)[:3] == BOM:
            handle.read(3)
    except PermissionError:
        raise InputError(f"{p}: file is not readable (permission denied)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise read_error(p, exc) from None
    return handle


def starts_with_bom(path: str | os.PathLike) -> bool:
    """Whether the (decompressed) file starts with a UTF-8 byte order mark (which the readers skip)."""
    p = Path(path)
    with open(p, "rb") as f:
        opened = gzip.open(p, "rb") if f.peek(2)[:2] == _GZIP_MAGIC else None
        try:
            return (opened or f).read(3) == BOM
        except (OSError, EOFError, zlib.error):
            return False
        finally:
            if opened is not None:
                opened.close()


def read_error(path: Path, exc: BaseException, lineno: int | None = None) -> InputError:
    """The one-line error for a file that cannot be read on (decompression, I/O)."""
    where = f" past line {lineno}" if lineno else ""
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return InputError(f"{path}: corrupt gzip file: cannot read{where} ({' '.join(str(exc).split())}); "
                          "check the file (gzip -t) or fetch it again")
    if isinstance(exc, EOFError):
        return InputError(f"{path}: truncated compressed file: cannot read{where} (the compressed data stops "
                          "mid-stream); check the file (gzip -t) or fetch it again")
    return InputError(f"{path}: cannot read file{where} ({getattr(exc, 'strerror', None) or exc})")


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
    n_records = 0
    header: bytes | None = None
    header_line = 0
    parts: list[bytes] = []
    lineno = 0
    with open_maybe_gzip(p) as handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                if raw[:1] == b">":
                    check_header(p, raw, lineno)
                    if header is not None:
                        n_records += 1
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
        except (zlib.error, OSError, EOFError) as exc:
            raise read_error(p, exc, lineno) from None
    if header is not None:
        n_records += 1
        yield _make_record(p, header, header_line, parts, seen, check_duplicates)
    if n_records == 0:
        raise InputError(f"{p}: empty file: no FASTA records")


# Shared by the FASTA and FASTQ readers (virnucflow.reads): IDs, checks, records.


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
