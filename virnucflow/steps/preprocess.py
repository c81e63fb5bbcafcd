"""VirNucPro's preprocessing, reproduced exactly: windows, six frames, ORF filter.

The original (Li-Jing-1997/VirNucPro, ``units.py``: ``split_fasta_chunk``,
``translate_dna``, ``identify_seq``; ``prediction.py``: ``make_predictdata``)
does, for each input record:

1. cut the sequence into ``ceil(L / chunk)`` windows of ``chunk`` bases whose
   overlaps spread the surplus ``ceil(L/chunk)*chunk - L`` with its own integer
   arithmetic (see :func:`chunk_bounds`; the last window can come out shorter
   than ``chunk``, exactly as in the original), IDs ``{id}_chunk_{k}``;
2. translate each window (uppercased) in frames 1-3 and, on the reverse
   complement, frames 1-3 with a 61+3 codon table; codons with any other letter
   (N, IUPAC ambiguity codes) are dropped, not translated to X;
3. keep the frames whose translation has no ``*`` and is not empty, with IDs
   suffixed ``F1..F3`` / ``R1..R3`` and a nucleotide slice of
   ``3 * len(protein) + 1`` bases starting at the frame offset (see
   :func:`frame_nucleotides`).

The classifier was trained on features of exactly these slices, so they are
reproduced with their quirks and must not be "fixed".
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from virnucflow.io.atomic import atomic_outputs
from virnucflow.errors import InputError
from virnucflow.io.reads import pair_id, paired_input, read_pairs, read_sequences

log = logging.getLogger("virnucflow")

CODON_TABLE = {
    "TCA": "S", "TCC": "S", "TCG": "S", "TCT": "S", "TTC": "F", "TTT": "F", "TTA": "L", "TTG": "L",
    "TAC": "Y", "TAT": "Y", "TAA": "*", "TAG": "*", "TGC": "C", "TGT": "C", "TGA": "*", "TGG": "W",
    "CTA": "L", "CTC": "L", "CTG": "L", "CTT": "L", "CCA": "P", "CCC": "P", "CCG": "P", "CCT": "P",
    "CAC": "H", "CAT": "H", "CAA": "Q", "CAG": "Q", "CGA": "R", "CGC": "R", "CGG": "R", "CGT": "R",
    "ATA": "I", "ATC": "I", "ATT": "I", "ATG": "M", "ACA": "T", "ACC": "T", "ACG": "T", "ACT": "T",
    "AAC": "N", "AAT": "N", "AAA": "K", "AAG": "K", "AGC": "S", "AGT": "S", "AGA": "R", "AGG": "R",
    "GTA": "V", "GTC": "V", "GTG": "V", "GTT": "V", "GCA": "A", "GCC": "A", "GCG": "A", "GCT": "A",
    "GAC": "D", "GAT": "D", "GAA": "E", "GAG": "E", "GGA": "G", "GGC": "G", "GGG": "G", "GGT": "G",
}  # fmt: skip


class _Translation(dict):
    """Codon -> amino acid; any codon with a non-ACGT letter maps to '' (dropped)."""

    def __missing__(self, codon: str) -> str:
        return ""


_TRANSLATE = _Translation(CODON_TABLE)
# Only A, C, G, T (either case) are complemented; other letters stay as they are.
_COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")
# From a frame's first base, codon by codon, up to the first stop codon (in C, no Python loop).
_STOP_IN_FRAME = re.compile(r"(?:...)*?(?:TAA|TAG|TGA)", re.DOTALL)
_CODONS = re.compile(r"...", re.DOTALL)
FASTA_WIDTH = 60  # Biopython's FASTA writer wraps at 60 columns
_RNA_TO_DNA = str.maketrans("Uu", "Tt")


def rna_to_dna(seq: str) -> str:
    """``U``/``u`` read as ``T``/``t`` (case kept): RNA input gives exactly the DNA results.

    The original drops any codon with a letter other than A, C, G, T before the
    stop-codon check, so an RNA record would pass every frame unchecked.
    """
    return seq.translate(_RNA_TO_DNA)


def chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` windows of a sequence of ``length`` bases.

    The original spreads the overlap ``surplus = n*chunk - length`` over the
    windows with ``lower = int(surplus / n)`` and shifts window ``k`` back by
    the sum of the first ``k`` entries of ``[lower+1]*need + [lower]*(n-1-need)``
    where ``need = surplus - lower*(n-1)`` (a list repeated by a negative count
    is empty). ``need`` can exceed ``n-1``, in which case every shift is
    ``lower+1`` and the last window ends early: e.g. 1200 bases in 500-base
    windows give (0,500), (399,899), (798,1200).
    """
    if chunk < 1:
        raise ValueError("chunk length must be positive")
    if length <= 0:
        return []
    n = -(-length // chunk)
    surplus = n * chunk - length
    lower = int(surplus / n)  # float division then truncation, as the original
    need = surplus - lower * (n - 1)
    shifts = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    bounds = []
    moved = 0
    for a, shift in zip(range(0, length, chunk), shifts):
        start = a - moved if a > 1 else a
        bounds.append((start, min(start + chunk, length)))
        moved += shift
    return bounds


def reverse_complement(seq: str) -> str:
    """Reverse complement as the original: only ACGT/acgt are complemented."""
    return seq.translate(_COMPLEMENT)[::-1]


def translate_frame(seq: str, frame: int) -> str:
    """Translate codons starting at ``frame, frame+3, ...`` (incomplete tail ignored)."""
    return "".join(map(_TRANSLATE.__getitem__, _CODONS.findall(seq, frame)))


def six_frames(seq: str) -> list[str]:
    """The six translations [F1, F2, F3, R1, R2, R3] of an uppercase sequence.

    Equivalent to the original's ``translate_dna``. Frames that contain a stop
    are returned as ``"*"`` without being translated (callers only test for
    ``*``), which skips most of the work on non-coding windows.
    """
    rc = reverse_complement(seq)
    out = []
    for strand in (seq, rc):
        out.extend("*" if _STOP_IN_FRAME.match(strand, f) else translate_frame(strand, f) for f in range(3))
    return out


def frame_nucleotides(seq: str, rc: str, frame_number: int, protein_length: int) -> str:
    """The nucleotide slice that the original pairs with frame ``frame_number`` (1-6).

    Forward frame f (1-3): ``seq[f-1 : f + 3*len(protein)]``; reverse frame r
    (1-3): ``rc[r-1 : r + 3*len(protein)]``. The slice is one base longer than
    the codons it covers (an off-by-one in the original), and shorter than the
    window when codons with ambiguous letters were dropped from the protein.
    DNABERT-S embeddings and hence the classifier were trained on exactly this
    slice, so it is kept as is.
    """
    n = protein_length * 3
    if frame_number <= 3:
        return seq[frame_number - 1 : frame_number + n]
    r = frame_number - 3
    return rc[r - 1 : r + n]


@dataclass(frozen=True)
class Frame:
    id: str  # {chunk_id}F1..F3 / R1..R3
    nucleotide: str
    protein: str


def identify_frames(chunk_id: str, window: str) -> list[Frame]:
    """Frames of one window kept by the original: no stop codon, non-empty protein."""
    seq = window.upper()
    proteins = six_frames(seq)
    rc = None
    frames = []
    for number, protein in enumerate(proteins, start=1):
        if "*" in protein or not protein:
            continue
        if number > 3 and rc is None:
            rc = reverse_complement(seq)
        suffix = f"F{number}" if number <= 3 else f"R{number - 3}"
        frames.append(Frame(chunk_id + suffix, frame_nucleotides(seq, rc or "", number, len(protein)), protein))
    return frames


@dataclass
class PreprocessStats:
    records: int = 0
    bases: int = 0
    chunks: int = 0
    frames: int = 0
    rna_records: int = 0  # records with U/u, read as T/t

    def add(self, other: "PreprocessStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


BATCH_BASES = 2_000_000  # bases per batch of records handed to a worker process


def preprocess_records(records: list[tuple[str, str]], chunk_length: int,
                       paired: bool, windows: bool = True) -> tuple[str, str, str, str, PreprocessStats]:
    """The four outputs' text for a batch of ``(id, sequence)`` records, and its counts:
    windows (wrapped at 60; empty unless ``windows``), kept frames' nucleotides and proteins,
    per-record rows."""
    stats = PreprocessStats()
    chunked: list[str] = []
    nuc: list[str] = []
    prot: list[str] = []
    recs: list[str] = []
    for rid, seq in records:
        if "U" in seq or "u" in seq:
            seq = rna_to_dna(seq)
            stats.rna_records += 1
        n_frames = 0
        bounds = chunk_bounds(len(seq), chunk_length)
        for k, (start, end) in enumerate(bounds, start=1):
            chunk_id = f"{rid}_chunk_{k}"
            window = seq[start:end]
            if windows:
                chunked.append(f">{chunk_id}\n")  # wrapped at 60 columns, as Biopython writes FASTA
                chunked.extend(window[i : i + FASTA_WIDTH] + "\n" for i in range(0, len(window), FASTA_WIDTH))
            for frame in identify_frames(chunk_id, window):
                nuc.append(f">{frame.id}\n{frame.nucleotide}\n")
                prot.append(f">{frame.id}\n{frame.protein}\n")
                n_frames += 1
        pair = f"\t{pair_id(rid)}" if paired else ""
        recs.append(f"{rid}\t{len(seq)}\t{len(bounds)}\t{n_frames}{pair}\n")
        stats.records += 1
        stats.bases += len(seq)
        stats.chunks += len(bounds)
        stats.frames += n_frames
    return "".join(chunked), "".join(nuc), "".join(prot), "".join(recs), stats


def _batches(records: Iterable, batch_bases: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    size = 0
    for record in records:
        batch.append((record.id, record.seq))
        size += len(record.seq)
        if size >= batch_bases:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _in_order(batches: Iterator[list], work, threads: int) -> Iterator:
    """``work(batch)`` for each batch, in order: here with one thread, else in ``threads``
    worker processes with at most ``2 * threads`` batches in flight (the reading, and any
    input error it raises, stays in this process)."""
    if threads <= 1:
        yield from map(work, batches)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(threads) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(work, batch))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def preprocess(
    fasta: str | os.PathLike,
    chunk_length: int,
    chunked_out: str | os.PathLike | None,
    nucleotide_out: str | os.PathLike,
    protein_out: str | os.PathLike,
    records_out: str | os.PathLike | None = None,
    source_out: str | os.PathLike | None = None,
    mate2: str | os.PathLike | None = None,
    threads: int = 1,
) -> PreprocessStats:
    """Write the original's three preprocessing outputs for one FASTA or FASTQ file.

    With ``mate2`` the two files are paired reads: each mate is a sequence of
    its own (IDs ``{pair}/1``, ``{pair}/2``, see :mod:`virnucflow.io.reads`) and
    ``records_out`` gains a ``pair`` column.

    - ``chunked_out`` (optional, ``output.chunked``): windows, wrapped at 60 columns, in the input's case;
    - ``nucleotide_out`` / ``protein_out``: kept frames, one sequence per line;
    - ``records_out`` (optional): per input record ``record_id, length,
      chunks, frames`` (TSV), used to summarise calls per input sequence;
    - ``source_out`` (optional): JSON with the input's path, size and BLAKE2b
      hash (:func:`virnucflow.io.opening.file_fingerprint`) and the counts.

    The records are read and checked here, in order, and translated in batches
    by ``threads`` processes (:func:`preprocess_records`); the batches are
    written in input order, so the outputs do not depend on ``threads``.
    All outputs appear together or not at all.
    """
    import functools

    if chunk_length < 3:
        raise InputError(f"chunk_length must be at least 3 (one codon), got {chunk_length}")
    t0 = time.perf_counter()
    stats = PreprocessStats()
    outs = [chunked_out, nucleotide_out, protein_out, records_out]
    written = [o for o in outs if o]
    with atomic_outputs(written + ([source_out] if source_out else [])) as tmps:
        tmp_of = dict(zip(written, tmps))
        handles = [open(tmp_of[o], "w", buffering=1 << 20) if o else None for o in outs]
        try:
            paired = bool(mate2) or paired_input(fasta)  # two mate files, or both mates in one BAM
            if records_out:
                handles[3].write("record_id\tlength\tchunks\tframes" + ("\tpair\n" if paired else "\n"))
            records = read_pairs(fasta, mate2) if mate2 else read_sequences(fasta)
            work = functools.partial(preprocess_records, chunk_length=chunk_length, paired=paired,
                                     windows=bool(chunked_out))
            for *texts, batch_stats in _in_order(_batches(records, BATCH_BASES), work, threads):
                for handle, text in zip(handles, texts):
                    if handle is not None:
                        handle.write(text)
                stats.add(batch_stats)
        finally:
            for h in handles:
                if h is not None:
                    h.close()
        if source_out:
            import json

            from virnucflow.io.opening import file_fingerprint

            from virnucflow import __version__

            source = {"fasta": str(fasta), **file_fingerprint(fasta), "records": stats.records, "bases": stats.bases,
                      "rna_records": stats.rna_records, "chunk_length": chunk_length, "workflow_version": __version__}
            if mate2:
                source["mate2"] = {"path": str(mate2), **file_fingerprint(mate2)}
            tmps[-1].write_text(json.dumps(source, indent=2) + "\n")
    name = f"{fasta} + {mate2} (mates)" if mate2 else str(fasta)
    from virnucflow.io.opening import starts_with_bom

    for path in [fasta] + ([mate2] if mate2 else []):
        if starts_with_bom(path):
            log.warning("%s: starts with a UTF-8 byte order mark (written by some Windows editors): skipped", path)
    if not stats.records:
        log.warning("%s: no sequences (an empty input): this sample's outputs will hold headers only", name)
    if stats.rna_records:
        log.warning("%s: %d of %d records contain U (RNA): read as T", name, stats.rna_records, stats.records)
    dt = time.perf_counter() - t0
    log.info(
        "%s: %d records, %d bases -> %d windows of at most %d bp, %d frames kept (%.1f s, %.0f records/s, %d %s)",
        name, stats.records, stats.bases, stats.chunks, chunk_length, stats.frames, dt,
        stats.records / dt if dt > 0 else float("nan"), threads, "process" if threads <= 1 else "processes",
    )
    return stats


def iter_identified(nucleotide_fa: str | os.PathLike, protein_faa: str | os.PathLike) -> Iterator[Frame]:
    """Read the paired identified files back (two-line records, same IDs in order)."""
    with open(nucleotide_fa) as nf, open(protein_faa) as pf:
        for lineno, (nh, ns, ph, ps) in enumerate(_pairs(nf, pf), start=1):
            if not nh.startswith(">") or nh != ph:
                raise InputError(
                    f"{nucleotide_fa} and {protein_faa}: record {lineno} does not match "
                    f"({nh.strip()!r} vs {ph.strip()!r})"
                )
            yield Frame(nh[1:].rstrip("\n"), ns.rstrip("\n"), ps.rstrip("\n"))


def _pairs(nf: Iterable[str], pf: Iterable[str]) -> Iterator[tuple[str, str, str, str]]:
    n_it, p_it = iter(nf), iter(pf)
    for nh in n_it:
        ns = next(n_it, "")
        ph = next(p_it, "")
        ps = next(p_it, "")
        yield nh, ns, ph, ps
    if next(p_it, None) is not None:
        raise InputError("identified protein file has more records than the nucleotide file")
