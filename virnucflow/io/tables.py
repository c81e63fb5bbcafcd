"""The workflow's tab-separated tables: one writer (and reader) for all of them.

Sequence IDs are the first word of a FASTA header and may hold any character
but whitespace (``"``, ``'``, ``#``, ``\\``, commas...), so the tables are
plain tab-separated text: no CSV quoting, no comments, no NA guessing.
"""

from __future__ import annotations

import csv
import os

import pandas as pd

from virnucflow.io.atomic import atomic_outputs

DEMO_BANNER = (
    "# DEMO MODELS (random weights, built by VirNucFlow for testing): "
    "these scores and calls mean nothing\n"
)


def write_tsv(path: str | os.PathLike, table: pd.DataFrame, demo: bool = False) -> None:
    """Write a tab-separated table atomically, after the demo banner when ``demo``."""
    with atomic_outputs([path]) as (tmp,):
        with open(tmp, "w") as f:
            if demo:
                f.write(DEMO_BANNER)
            table.to_csv(f, sep="\t", index=False, na_rep="NA", quoting=csv.QUOTE_NONE)


def has_demo_banner(path: str | os.PathLike) -> bool:
    """Whether a table was written from demo models (starts with :data:`DEMO_BANNER`)."""
    with open(path) as f:
        return f.readline() == DEMO_BANNER


def read_tsv(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv` (banner lines starting with '#' skipped)."""
    return pd.read_csv(path, sep="\t", comment=None, skiprows=_banner_lines(path), keep_default_na=False,
                       quoting=csv.QUOTE_NONE, **kwargs)


def _banner_lines(path: str | os.PathLike) -> int:
    with open(path) as f:
        n = 0
        for line in f:
            if not line.startswith("#"):
                break
            n += 1
    return n
