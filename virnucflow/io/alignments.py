"""Reads delivered as SAM, BAM or CRAM (unaligned, as many sequencing centres deliver them, or aligned).

Read with ``pysam``; the format is recognised from the content (:func:`alignment_format`). Every
primary record is a read: secondary and supplementary records (other alignments of a read already
read) are skipped. Aligned files are accepted: all primary reads are read, mapped or not, and
reads aligned to the reverse strand are turned back into the orientation they were sequenced in
(BAM stores them reverse-complemented), so a read gives the same windows and frames as from FASTQ;
the log says how many were mapped (to screen only unmapped reads, filter first:
``samtools view -b -f 4``). Paired reads (flag 0x1) are named as mates of paired FASTQ are,
``{name}/1`` and ``{name}/2`` (flags 0x40, 0x80), and the two mates of a pair must be next to each
other, as in unaligned BAM (a file sorted by position: ``samtools collate`` first).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

from virnucflow.errors import InputError, short
from virnucflow.io.fasta import _ALLOWED, FastaRecord, check_unique

log = logging.getLogger("virnucflow")

SAM_HEADER = (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t")
_COMPLEMENT = str.maketrans("ACGTURYSWKMBDHVNacgturyswkmbdhvn", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn")


def alignment_format(path: str | os.PathLike, head: bytes) -> str | None:
    """``bam``, ``cram`` or ``sam`` (``head``: the first bytes of the decompressed file), or None."""
    if head.startswith(b"BAM\x01"):
        return "bam"
    with open(path, "rb") as f:
        if f.read(4) == b"CRAM":
            return "cram"
    if head.startswith(SAM_HEADER):
        return "sam"
    return None


def _open(path: Path, fmt: str):  # noqa: ANN202 (pysam.AlignmentFile)
    import pysam

    pysam.set_verbosity(0)  # htslib's own warnings would add lines beside ours
    mode = {"bam": "rb", "cram": "rc", "sam": "r"}[fmt]
    try:
        return pysam.AlignmentFile(str(path), mode, check_sq=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: truncated or corrupt {fmt.upper()} file ({short(exc, 200)}); check it "
                         "(samtools quickcheck) or fetch it again") from None


def is_paired(path: str | os.PathLike, fmt: str) -> bool:
    """Whether the file's first primary read is one of a pair."""
    with _open(Path(path), fmt) as f:
        try:
            for rec in f.fetch(until_eof=True):
                if not (rec.is_secondary or rec.is_supplementary):
                    return bool(rec.is_paired)
        except OSError as exc:
            raise InputError(f"{path}: truncated or corrupt {fmt.upper()} file ({short(exc, 200)}); check it "
                             "(samtools quickcheck) or fetch it again") from None
    return False


def read_alignments(path: str | os.PathLike, fmt: str, check_duplicates: bool = True) -> Iterator[FastaRecord]:
    """The primary reads of a SAM/BAM/CRAM file, in file order, validated as the FASTQ reader does."""
    p = Path(path)
    seen: dict[str, int] = {}
    n = mapped = skipped = 0
    mate: str | None = None  # the pair whose mate 2 comes next
    with _open(p, fmt) as f:
        try:
            for rec in f.fetch(until_eof=True):
                if rec.is_secondary or rec.is_supplementary:
                    skipped += 1
                    continue
                n += 1
                name = rec.query_name or ""
                seq = rec.query_sequence
                if not name:
                    raise InputError(f"{p}: record {n} has no read name")
                if rec.is_paired:
                    if rec.is_read1 == rec.is_read2:
                        raise InputError(f"{p}: read '{name}' (record {n}) is paired but not marked as mate 1 or 2")
                    if rec.is_read1:
                        if mate is not None:
                            raise _not_adjacent(p, mate)
                        mate, rid = name, f"{name}/1"
                    else:
                        if mate != name:
                            raise _not_adjacent(p, mate or name)
                        mate, rid = None, f"{name}/2"
                elif mate is not None:
                    raise _not_adjacent(p, mate)
                else:
                    rid = name
                if not seq:
                    raise InputError(f"{p}: read '{rid}' (record {n}) has no sequence ('*')")
                if seq.translate(_DELETE_ALLOWED):
                    bad = seq.translate(_DELETE_ALLOWED)[0]
                    raise InputError(f"{p}: read '{rid}' (record {n}): character {bad!r} is not an IUPAC nucleotide "
                                     "code (allowed: ACGTURYSWKMBDHVN, any case)")
                if not rec.is_unmapped:
                    mapped += 1
                    if rec.is_reverse:  # stored as aligned: back to the orientation it was sequenced in
                        seq = seq.translate(_COMPLEMENT)[::-1]
                if check_duplicates:
                    check_unique(p, rid, n, seen)
                yield FastaRecord(rid, rid, seq, n)
        except OSError as exc:
            raise InputError(f"{p}: truncated or corrupt {fmt.upper()} file: cannot read past record {n} "
                             f"({short(exc, 200)}); check it (samtools quickcheck) or fetch it again") from None
    if mate is not None:
        raise _not_adjacent(p, mate)
    if mapped:
        log.info("%s: %d of %d primary reads are aligned; all are read (reverse-strand ones turned back); to screen "
                 "only unmapped reads, filter first: samtools view -b -f 4", p, mapped, n)
    if skipped:
        log.info("%s: %d secondary or supplementary records skipped (other alignments of reads already read)", p, skipped)


_DELETE_ALLOWED = str.maketrans("", "", _ALLOWED.decode())


def _not_adjacent(path: Path, name: str) -> InputError:
    return InputError(f"{path}: the mates of pair '{name}' are not next to each other (a file sorted by position?); "
                      "group them first: samtools collate -o collated.bam in.bam")
