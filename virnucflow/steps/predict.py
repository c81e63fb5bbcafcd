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

import csv
import io
import os
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from virnucflow.io.atomic import atomic_outputs
from virnucflow.io.tables import DEMO_BANNER, read_tsv

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
    records_tsv: str | os.PathLike | pd.DataFrame,
    predictions: pd.DataFrame,
    windows: pd.DataFrame,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
) -> pd.DataFrame:
    """One row per input sequence, in input order.

    ``call`` is decided by :func:`virnucflow.steps.calling.call_sequences` (by
    default ``virus`` when at least half of the sequence's scored windows are
    viral by the original's per-window rule, ``non-viral`` otherwise,
    ``no-frames`` when no frame of any window passed the ORF filter, and
    ``too-short`` for records shorter than 9 bp whatever their windows say).
    ``max_viral_score`` is the highest per-frame viral score (score2). For
    paired reads (records with a ``pair`` column) ``pair_call`` says whether
    both, one or neither mate of the pair is called viral.
    """
    from virnucflow.steps.calling import call_sequences, pair_calls

    records = records_tsv if isinstance(records_tsv, pd.DataFrame) else read_tsv(records_tsv, dtype={"record_id": str})
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
    batches :func:`virnucflow.models.classifier.classify` makes of the whole table, so the same scores."""
    import torch

    from virnucflow.models.classifier import BATCH, classify

    if not len(features):  # no frames: the widths are still checked
        return classify(model, torch.zeros((0, features.dim))).numpy()
    buffer = np.empty((min(BATCH, len(features)), features.dim), np.float32)
    return np.concatenate([classify(model, torch.from_numpy(features.rows(start, start + BATCH, out=buffer))).numpy()
                           for start in range(0, len(features), BATCH)])


#: Records per block of the gather: its memory is that of a block, whatever the sample's size.
BLOCK_RECORDS = 20_000
#: Per-window calls held in memory before a sorted run of them goes to a temporary file.
RUN_WINDOWS = 1_000_000
_PRED_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"


def _sample_frames(sample: str, score_files: Sequence[str | os.PathLike]) -> Iterator[str]:
    """The sample's lines of ``prediction_results.txt`` from its batch's score tables, in input order."""
    from virnucflow.errors import MergeError

    expected = 0
    for path in score_files:
        with open(path) as f:
            f.readline()
            for line in f:
                name, index, rest = line.split("\t", 2)
                if name != sample:
                    continue
                if int(index) != expected:
                    raise MergeError(f"{path}: sample {sample!r} frame {index} where frame {expected} was expected: "
                                     "the scores do not match the plan (rerun with --forcerun plan_shards)")
                expected += 1
                yield rest


def _records_blocks(records_tsv: str | os.PathLike) -> Iterator[pd.DataFrame]:
    """``records.tsv`` in blocks of about :data:`BLOCK_RECORDS` records; the mates of a pair stay together."""
    carry = None
    reader = pd.read_csv(records_tsv, sep="\t", dtype={"record_id": str, "pair": str}, keep_default_na=False,
                         quoting=csv.QUOTE_NONE, chunksize=BLOCK_RECORDS)
    for chunk in reader:
        block = chunk if carry is None else pd.concat([carry, chunk], ignore_index=True)
        carry = None
        if "pair" in block.columns and len(block):
            last = block["pair"].iloc[-1]
            tail = block["pair"] == last
            carry, block = block[tail].reset_index(drop=True), block[~tail].reset_index(drop=True)
        if len(block):
            yield block
    if carry is not None and len(carry):
        yield carry


def _csv(table: pd.DataFrame, header: bool, **kwargs) -> str:
    buf = io.StringIO()
    table.to_csv(buf, sep="\t", index=False, header=header, **kwargs)
    return buf.getvalue()


def gather_sample(
    sample: str,
    records_tsv: str | os.PathLike,
    score_files: Sequence[str | os.PathLike],
    chunk_length: int,
    predictions_out: str | os.PathLike,
    highest_out: str | os.PathLike,
    summary_out: str | os.PathLike,
    bed_out: str | os.PathLike | None = None,
    windows_out: str | os.PathLike | None = None,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
    demo: bool = False,
) -> dict[str, int]:
    """Write a sample's outputs from its batch's per-shard score tables, block by block of records.

    The files are those the whole-sample functions above write (``write_predictions``,
    ``highest_scores``, ``summarise``, ``tracks.window_table``), made by the same
    functions on blocks of :data:`BLOCK_RECORDS` records: memory is a block's, not
    the sample's. ``prediction_results_highestscore.csv`` is sorted by window ID
    over the whole sample: sorted runs of at most :data:`RUN_WINDOWS` windows,
    merged (beyond that many, the runs wait in temporary files beside the output).
    """
    import heapq
    import itertools
    import logging
    import tempfile

    from virnucflow.steps.calling import MIN_RECORD_LENGTH
    from virnucflow.errors import MergeError
    from virnucflow.steps.tracks import TSV_COLUMNS, bed_table, window_table

    log = logging.getLogger("virnucflow")
    frames = _sample_frames(sample, score_files)
    outs = [predictions_out, highest_out, summary_out] + ([bed_out, windows_out] if bed_out else [])
    counts = {"frames": 0, "records": 0, "virus": 0, "short": 0, "few": 0}
    banner = DEMO_BANNER if demo else ""
    spill = None  # a temporary folder beside the output, made only when the sorted runs leave memory
    with atomic_outputs(outs) as tmps:
        handles = [open(t, "w") for t in tmps]
        pred_f, high_f, summ_f = handles[:3]
        pred_f.write(banner + _PRED_HEADER)
        high_f.write(banner)
        summ_f.write(banner)
        runs: list[list[str]] = []
        files: list[str] = []
        held = 0
        first = True
        try:
            for block in _records_blocks(records_tsv):
                n = int(block["frames"].sum())
                lines = list(itertools.islice(frames, n))
                if len(lines) != n:
                    raise MergeError(f"sample {sample!r}: {records_tsv} lists {counts['frames'] + n} frames up to "
                                     f"record {block['record_id'].iloc[-1]!r}, the scores only {counts['frames'] + len(lines)}")
                text = "".join(lines)
                pred_f.write(text)
                predictions = pd.read_csv(io.StringIO(_PRED_HEADER + text), sep="\t", keep_default_na=False,
                                          quoting=csv.QUOTE_NONE, dtype={"Sequence_ID": str, "Prediction": str})
                _check_scores(sample, predictions)
                windows = highest_scores(predictions)
                summary = summarise(block, predictions, windows, min_viral_fraction, min_windows)
                summ_f.write(_csv(summary, first, na_rep="NA", quoting=csv.QUOTE_NONE))
                if bed_out:
                    table = window_table(block, predictions, chunk_length)
                    handles[3].write(_csv(bed_table(table), False))
                    handles[4].write(_csv(table, first, na_rep="NA", float_format="%.6g"))
                runs.append(_csv(windows, False, na_rep="NA", quoting=csv.QUOTE_NONE).splitlines(keepends=True))
                held += len(windows)
                if held >= RUN_WINDOWS:
                    spill = spill or tempfile.mkdtemp(prefix=".highest_runs.", dir=os.path.dirname(os.path.abspath(highest_out)))
                    files.append(_spill(runs, spill, len(files)))
                    runs, held = [], 0
                first = False
                counts["frames"] += n
                counts["records"] += len(block)
                counts["virus"] += int((summary["call"] == "virus").sum())
                too_short = summary["call"] == "too-short"
                short = int((too_short & (summary["length"] < MIN_RECORD_LENGTH)).sum())
                counts["short"] += short
                counts["few"] += int(too_short.sum()) - short
            if next(frames, None) is not None:
                raise MergeError(f"sample {sample!r}: the scores hold more frames than {records_tsv} lists "
                                 f"({counts['frames']})")
            if first:  # no records (preprocessing refuses an empty input today): the headers alone
                summ_f.write("\t".join(SUMMARY_COLUMNS) + "\n")
                if bed_out:
                    handles[4].write("\t".join(TSV_COLUMNS) + "\n")
            high_f.write("Modified_ID\tIs_Virus\n")
            opened = [open(f) for f in files]
            try:
                high_f.writelines(heapq.merge(*opened, *runs, key=lambda line: line.split("\t", 1)[0]))
            finally:
                for f in opened:
                    f.close()
        finally:
            for h in handles:
                h.close()
            if spill:
                import shutil

                shutil.rmtree(spill, ignore_errors=True)
    log.info(
        "%s: %d frames scored; %d of %d input sequences called viral (calling: min_viral_fraction %g, min_windows %d)",
        sample, counts["frames"], counts["virus"], counts["records"], min_viral_fraction, min_windows,
    )
    if counts["short"]:
        log.warning("%d input sequences shorter than %d bp: called too-short in %s (their frames are still scored)",
                    counts["short"], MIN_RECORD_LENGTH, summary_out)
    if counts["few"]:
        log.warning("%d input sequences with fewer than %d scored windows (calling.min_windows): called too-short in %s",
                    counts["few"], min_windows, summary_out)
    return counts


def _check_scores(sample: str, predictions: pd.DataFrame) -> None:
    """No call from a missing or non-finite score: refuse the sample's outputs naming the first such frame."""
    from virnucflow.errors import NumericalError

    scores = predictions[["score1", "score2"]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(scores).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise NumericalError(
            f"sample {sample!r}: frame {predictions['Sequence_ID'].iloc[k]} has no finite score "
            f"({predictions['score1'].iloc[k]}, {predictions['score2'].iloc[k]}; {int(bad.sum())} such frames): no "
            "calls are written; check the classifier file and the embeddings (virnucflow status, the nan_gate)")


def _spill(runs: list[list[str]], folder: str, k: int) -> str:
    """Merge the sorted runs held in memory into one sorted temporary file."""
    import heapq

    path = os.path.join(folder, f"run{k}.tsv")
    with open(path, "w") as f:
        f.writelines(heapq.merge(*runs, key=lambda line: line.split("\t", 1)[0]))
    return path


def predict_sample(
    files: Mapping[str, Sequence[str | os.PathLike]],
    models_json: str | os.PathLike,
    records_tsv: str | os.PathLike,
    predictions_out: str | os.PathLike,
    highest_out: str | os.PathLike,
    summary_out: str | os.PathLike,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
) -> dict[str, int]:
    """``virnucflow predict``: score a sample's embedding files (``files``: model name -> its files, in
    feature order) however they are split (joined by ID,
    :func:`virnucflow.io.features.read_features`) and write its three prediction outputs with
    :func:`gather_sample`. (The workflow scores shard by shard, :mod:`virnucflow.steps.score`.)"""
    import json
    import logging
    import tempfile

    from virnucflow.models.classifier import load_classifier
    from virnucflow.io.features import read_features
    from virnucflow.steps.score import SCORE_COLUMNS

    features = read_features(files)
    with open(models_json) as f:
        classifier_path = json.load(f)["classifier"]["path"]
    model, meta = load_classifier(classifier_path)
    demo = bool(meta["demo_model"] or features.attrs.get("demo_models", False))
    if demo:
        logging.getLogger("virnucflow").warning("DEMO MODELS in use: the predictions of this run mean nothing")
    scores = score_features(model, features)
    with tempfile.TemporaryDirectory() as tmp:
        table = os.path.join(tmp, "scores.tsv")
        with open(table, "w") as out:
            out.write("\t".join(SCORE_COLUMNS) + "\n")
            for k, (seqid, (s1, s2)) in enumerate(zip(features.ids, scores)):
                out.write(f"\t{k}\t{seqid}\t{'virus' if s2 > s1 else 'others'}\t{str(s1)}\t{str(s2)}\n")
        return gather_sample("", records_tsv, [table], 0, predictions_out, highest_out, summary_out,
                             min_viral_fraction=min_viral_fraction, min_windows=min_windows, demo=demo)
