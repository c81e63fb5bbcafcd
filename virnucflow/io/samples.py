"""The sample sheet: TSV with columns ``sample`` and ``fasta`` (alias ``reads``),
and optionally ``mate2`` (the second file of paired reads).

Checked when the workflow starts, so a typo fails in seconds with one line
naming the sheet, the line and the problem, not hours later in a job.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from virnucflow.errors import InputError

# A plain file-name component: no '/', not '.' or '..', not hidden, no leading '-'.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Sample names that would collide with the workflow's own files and folders
#: (``results/{sample}/`` and ``logs/{sample}/`` sit beside them).
RESERVED_NAMES = {
    "models": "results/models/ and logs/models/",
    "models.json": "results/models.json",
    "batches": "results/batches/ and logs/batches/",
    "run": "results/run/",
    "selftest": "results/selftest/",
    "report.html": "results/report.html",
    "benchmarks": "logs/benchmarks/",
    "build_demo_models.log": "logs/build_demo_models.log",
    "report_run.log": "logs/report_run.log",
    "selftest.log": "logs/selftest.log",
    "build_demo_models.tsv": "logs/benchmarks/build_demo_models.tsv",
    "models_manifest.tsv": "logs/benchmarks/models_manifest.tsv",
    "report_run.tsv": "logs/benchmarks/report_run.tsv",
    "selftest.tsv": "logs/benchmarks/selftest.tsv",
}


def check_sample_name(name: str) -> str | None:
    """Why ``name`` cannot be a sample name, or None when it can."""
    if not NAME.match(name):
        return (f"sample name {name!r} must be a plain file name: letters, digits, '_', '.' and '-', "
                "starting with a letter or digit")
    if name in RESERVED_NAMES:
        return f"sample name {name!r} is reserved (it would collide with the workflow's {RESERVED_NAMES[name]})"
    return None


@dataclass(frozen=True)
class Sample:
    name: str
    fasta: str
    line: int
    mate2: str | None = None


def read_sample_sheet(path: str | os.PathLike, check_files: bool = True) -> list[Sample]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: sample sheet not found")
    if not p.is_file():
        raise InputError(f"{p}: sample sheet is not a regular file (a directory, pipe or device)")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:  # -sig: a byte order mark (Excel) is skipped
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r and not (len(r) == 1 and not r[0].strip())]
    except UnicodeDecodeError:
        raise InputError(f"{p}: sample sheet is not UTF-8 text; save it as UTF-8 tab-separated text") from None
    except csv.Error as exc:
        raise InputError(f"{p}: not a tab-separated sample sheet ({exc})") from None
    if not rows or rows[0][0].startswith("#") and len(rows) == 1:
        raise InputError(f"{p}: sample sheet is empty")
    header = [h.strip() for h in rows[0]]
    if "fasta" not in header and "reads" in header:
        header[header.index("reads")] = "fasta"
    if "sample" not in header or "fasta" not in header:
        raise InputError(f"{p}: sample sheet needs tab-separated columns 'sample' and 'fasta' (found {header})")
    si, fi = header.index("sample"), header.index("fasta")
    mi = header.index("mate2") if "mate2" in header else None
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if row[0].startswith("#"):
            continue
        if len(row) <= max(si, fi):
            raise InputError(f"{p}: line {lineno}: expected {len(header)} tab-separated columns, found {len(row)}")
        name, fasta = row[si].strip(), row[fi].strip()
        mate2 = row[mi].strip() if mi is not None and mi < len(row) and row[mi].strip() else None
        problem = check_sample_name(name)
        if problem:
            raise InputError(f"{p}: line {lineno}: {problem}")
        if name in seen:
            raise InputError(f"{p}: sample {name!r} is listed twice (lines {seen[name]} and {lineno})")
        seen[name] = lineno
        if check_files:
            for what, path in (("FASTA file", fasta), ("mate2 file", mate2)):
                if not path:
                    continue
                fp = Path(path)
                if fp.is_dir():
                    raise InputError(f"{p}: line {lineno}: sample {name!r}: {what} {path} is a directory, not a file")
                if not fp.exists():
                    raise InputError(f"{p}: line {lineno}: sample {name!r}: {what} {path} not found")
                if not fp.is_file():
                    raise InputError(f"{p}: line {lineno}: sample {name!r}: {what} {path} is not a regular file "
                                     "(a pipe or a device: the workflow reads each input more than once); save "
                                     "it to a file first")
                if not os.access(fp, os.R_OK):
                    raise InputError(f"{p}: line {lineno}: sample {name!r}: {what} {path} is not readable")
            if mate2 and Path(mate2).resolve() == Path(fasta).resolve():
                raise InputError(f"{p}: line {lineno}: sample {name!r}: fasta and mate2 are the same file "
                                 f"({fasta}); give the mate 2 (R2) file as mate2")
        samples.append(Sample(name, fasta, lineno, mate2))
    if not samples:
        raise InputError(f"{p}: sample sheet lists no samples")
    return samples
