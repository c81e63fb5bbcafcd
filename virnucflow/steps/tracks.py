"""Window tracks: where along each input sequence the viral signal is.

- ``windows.bed`` (BED6, 0-based half-open): sequence, start, end, window ID,
  score = round(1000 x the window's highest frame viral score) (0 for a window
  with no scored frame), strand ``.`` (a window is scored on both strands).
- ``windows.tsv``: the same windows with the viral score (score2) of each of
  the six frames (``NA`` where the frame had a stop codon and was not scored),
  the window's highest viral score and its call by the original's rule.

Window coordinates are those the preprocessing cut (:func:`chunk_bounds`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from virnucflow.io.atomic import atomic_outputs
from virnucflow.steps.preprocess import chunk_bounds
from virnucflow.io.tables import read_tsv

FRAMES = ["F1", "F2", "F3", "R1", "R2", "R3"]
TSV_COLUMNS = ["sequence_id", "start", "end", "window_id", *FRAMES, "max_viral_score", "is_viral"]


def window_table(records: pd.DataFrame, predictions: pd.DataFrame, chunk_length: int) -> pd.DataFrame:
    """One row per window of every input record, in input order."""
    rows = []
    for rid, length in zip(records["record_id"], records["length"]):
        for k, (start, end) in enumerate(chunk_bounds(int(length), chunk_length), start=1):
            rows.append((rid, start, end, f"{rid}_chunk_{k}"))
    table = pd.DataFrame(rows, columns=["sequence_id", "start", "end", "window_id"])
    ids = predictions["Sequence_ID"].astype(str)
    scores = pd.DataFrame(
        {"window_id": ids.str[:-2], "frame": ids.str[-2:], "score1": predictions["score1"], "score2": predictions["score2"]}
    )
    wide = scores.pivot(index="window_id", columns="frame", values="score2").reindex(columns=FRAMES)
    per_win = scores.groupby("window_id").agg(s1=("score1", "max"), max_viral_score=("score2", "max"))
    table = table.join(wide, on="window_id").join(per_win, on="window_id")
    scored = table["max_viral_score"].notna()
    table["is_viral"] = np.where(scored, np.where(table["max_viral_score"] >= table["s1"], "True", "False"), "NA")
    return table[TSV_COLUMNS]


def bed_table(table: pd.DataFrame) -> pd.DataFrame:
    """BED6 rows of a :func:`window_table`."""
    score = (table["max_viral_score"].fillna(0.0) * 1000).round().clip(0, 1000).astype(int)
    return pd.DataFrame({"chrom": table["sequence_id"], "start": table["start"], "end": table["end"],
                         "name": table["window_id"], "score": score, "strand": "."})


def write_window_tracks(
    records_tsv: str | os.PathLike,
    predictions: pd.DataFrame,
    chunk_length: int,
    bed_out: str | os.PathLike,
    tsv_out: str | os.PathLike,
) -> pd.DataFrame:
    records = read_tsv(records_tsv, dtype={"record_id": str})
    table = window_table(records, predictions, chunk_length)
    bed = bed_table(table)
    with atomic_outputs([bed_out, tsv_out]) as (bed_tmp, tsv_tmp):
        bed.to_csv(bed_tmp, sep="\t", index=False, header=False)
        table.to_csv(tsv_tmp, sep="\t", index=False, na_rep="NA", float_format="%.6g")
    return table
