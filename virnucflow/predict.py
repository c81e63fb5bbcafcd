"""Prediction outputs in the original's formats, plus a per-sequence summary.

- ``prediction_results.txt``: ``Sequence_ID  Prediction  score1  score2`` per
  frame, scores written as ``str(numpy.float32)`` (what the original's
  ``'\\t'.join(map(str, probability))`` writes).
- ``prediction_results_highestscore.csv`` (tab-separated despite the name):
  ``Modified_ID  Is_Virus`` per window, computed as the original does from the
  text file it has just written: ``Modified_ID`` is the frame ID without its
  2-character frame suffix, ``Is_Virus`` is ``max(score2) >= max(score1)``
  over the window's frames, rows sorted by ID as strings (pandas groupby).
- ``summary.tsv``: one row per input sequence, in input order.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_outputs
from .tables import DEMO_BANNER, read_tsv, write_tsv

SUMMARY_COLUMNS = [
    "sequence_id",
    "length",
    "chunks",
    "frames_scored",
    "chunks_scored",
    "viral_chunks",
    "viral_chunk_fraction",
    "max_viral_score",
    "call",
]


def write_predictions(path: str | os.PathLike, ids: Sequence[str], scores: np.ndarray, demo: bool = False) -> None:
    """Write ``prediction_results.txt`` exactly as the original formats it."""
    scores = np.asarray(scores, dtype=np.float32)
    with atomic_outputs([path]) as (tmp,):
        with open(tmp, "w") as f:
            if demo:
                f.write(DEMO_BANNER)
            f.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
            for seqid, row in zip(ids, scores):
                # torch.max semantics: the first maximum wins, so a tie is "others".
                prediction = "virus" if row[1] > row[0] else "others"
                f.write(f"{seqid}\t{prediction}\t{str(row[0])}\t{str(row[1])}\n")


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    return read_tsv(path, dtype={"Sequence_ID": str, "Prediction": str})


def highest_scores(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per-window call from per-frame scores, as the original's ``determine_virus``."""
    df = predictions.assign(Modified_ID=predictions["Sequence_ID"].str[:-2])
    grouped = df.groupby("Modified_ID", sort=True)
    is_virus = grouped["score2"].max() >= grouped["score1"].max()
    return pd.DataFrame({"Modified_ID": is_virus.index.astype(str), "Is_Virus": is_virus.to_numpy(dtype=bool)})


def record_of_chunk(chunk_id: str) -> str:
    """Input record ID of a window ID ``{record}_chunk_{k}`` (the record may contain '_chunk_')."""
    return chunk_id.rsplit("_chunk_", 1)[0]


def summarise(
    records_tsv: str | os.PathLike,
    predictions: pd.DataFrame,
    windows: pd.DataFrame,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
) -> pd.DataFrame:
    """One row per input sequence, in input order.

    ``call`` is decided by :func:`virnucflow.calling.call_sequences` (by
    default ``virus`` when at least half of the sequence's scored windows are
    viral by the original's per-window rule, ``non-viral`` otherwise,
    ``no-frames`` when no frame of any window passed the ORF filter, and
    ``too-short`` for records shorter than 9 bp whatever their windows say).
    ``max_viral_score`` is the highest per-frame viral score (score2). For
    paired reads (records with a ``pair`` column) ``pair_call`` says whether
    both, one or neither mate of the pair is called viral.
    """
    from .calling import call_sequences, pair_calls

    records = read_tsv(records_tsv, dtype={"record_id": str})
    pred = predictions.assign(record=predictions["Sequence_ID"].str[:-2].map(record_of_chunk))
    per_rec = pred.groupby("record").agg(frames_scored=("score2", "size"), max_viral_score=("score2", "max"))
    win = windows.assign(record=windows["Modified_ID"].map(record_of_chunk))
    per_win = win.groupby("record").agg(chunks_scored=("Is_Virus", "size"), viral_chunks=("Is_Virus", "sum"))
    out = records.rename(columns={"record_id": "sequence_id"}).set_index("sequence_id")
    out = out.join(per_rec).join(per_win).reset_index()
    out["frames_scored"] = out["frames_scored"].fillna(0).astype(int)
    out["chunks_scored"] = out["chunks_scored"].fillna(0).astype(int)
    out["viral_chunks"] = out["viral_chunks"].fillna(0).astype(int)
    frac = out["viral_chunks"] / out["chunks_scored"].where(out["chunks_scored"] > 0)
    out["viral_chunk_fraction"] = frac.round(4)
    out["max_viral_score"] = out["max_viral_score"].astype(float).round(6)
    out["call"] = call_sequences(out["length"], out["chunks_scored"], frac, min_viral_fraction, min_windows)
    if "pair" in out.columns:
        out["pair_call"] = pair_calls(out["pair"], out["call"])
        return out[SUMMARY_COLUMNS + ["pair", "pair_call"]]
    return out[SUMMARY_COLUMNS]


def score_features(model, features) -> np.ndarray:  # noqa: ANN001 (MLPClassifier, features.Features)
    """(N, 2) float32 softmax scores of a sample's features, gathered batch by batch: the same
    batches :func:`virnucflow.classifier.classify` makes of the whole table, so the same scores."""
    import torch

    from .classifier import BATCH, classify

    if not len(features):  # no frames: the widths are still checked
        return classify(model, torch.zeros((0, features.dim))).numpy()
    buffer = np.empty((min(BATCH, len(features)), features.dim), np.float32)
    return np.concatenate([classify(model, torch.from_numpy(features.rows(start, start + BATCH, out=buffer))).numpy()
                           for start in range(0, len(features), BATCH)])


def predict_sample(
    nucleotide_files: Sequence[str | os.PathLike],
    protein_files: Sequence[str | os.PathLike],
    models_json: str | os.PathLike,
    records_tsv: str | os.PathLike,
    predictions_out: str | os.PathLike,
    highest_out: str | os.PathLike,
    summary_out: str | os.PathLike,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
) -> pd.DataFrame:
    """Score a sample's features and write its three prediction outputs.

    The features are joined in memory from the per-shard DNABERT-S and ESM-2
    embedding files (:func:`virnucflow.features.read_features`, the same join and
    checks as ``features.h5``'s), so scoring does not wait for that file to be written.
    """
    import json
    import logging

    from .calling import MIN_RECORD_LENGTH
    from .classifier import load_classifier
    from .features import read_features

    log = logging.getLogger("virnucflow")
    features = read_features(nucleotide_files, protein_files)
    with open(models_json) as f:
        classifier_path = json.load(f)["classifier"]["path"]
    model, meta = load_classifier(classifier_path)
    demo = bool(meta["demo_model"] or features.attrs.get("demo_models", False))
    if demo:
        log.warning("DEMO MODELS in use: the predictions of this run mean nothing")
    scores = score_features(model, features)
    write_predictions(predictions_out, features.ids, scores, demo=demo)
    # per-window calls from the file just written (as the original does), read once
    predictions = read_predictions(predictions_out)
    windows = highest_scores(predictions)
    write_tsv(highest_out, windows, demo)
    summary = summarise(records_tsv, predictions, windows, min_viral_fraction, min_windows)
    write_tsv(summary_out, summary, demo)
    log.info(
        "%d frames scored; %d of %d input sequences called viral (calling: min_viral_fraction %g, min_windows %d)",
        len(features.ids), int((summary["call"] == "virus").sum()), len(summary), min_viral_fraction, min_windows,
    )
    too_short = summary["call"] == "too-short"
    n_short = int((too_short & (summary["length"] < MIN_RECORD_LENGTH)).sum())
    if n_short:
        log.warning("%d input sequences shorter than %d bp: called too-short in %s (their frames are still scored)",
                    n_short, MIN_RECORD_LENGTH, summary_out)
    n_few = int(too_short.sum()) - n_short
    if n_few:
        log.warning("%d input sequences with fewer than %d scored windows (calling.min_windows): called too-short in %s",
                    n_few, min_windows, summary_out)
    return summary
