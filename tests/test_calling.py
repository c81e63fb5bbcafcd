"""Calling options (preset, min_viral_fraction, min_windows) and window tracks."""

from __future__ import annotations

import pandas as pd
import pytest

from virnucflow.steps.calling import PRESETS, resolve_calling
from virnucflow.errors import InputError
from virnucflow.steps.predict import highest_scores, read_predictions, summarise
from virnucflow.io.tables import write_tsv
from virnucflow.steps.preprocess import chunk_bounds, identify_frames, preprocess, reverse_complement
from virnucflow.steps.tracks import write_window_tracks

from .conftest import ORIGINAL, REPO

DATA = REPO / "tests" / "data" / "calling"


def _calls(**calling) -> dict[str, str]:
    pred = read_predictions(DATA / "prediction_results.txt")
    summary = summarise(DATA / "records.tsv", pred, highest_scores(pred), **resolve_calling(calling))
    return dict(zip(summary["sequence_id"], summary["call"]))


def test_defaults_reproduce_the_summary_byte_for_byte(tmp_path):
    # summary_default.tsv was written by summarise() before the calling options existed
    pred = read_predictions(DATA / "prediction_results.txt")
    write_tsv(tmp_path / "s.tsv", summarise(DATA / "records.tsv", pred, highest_scores(pred), **resolve_calling({})))
    assert (tmp_path / "s.tsv").read_bytes() == (DATA / "summary_default.tsv").read_bytes()


# viral window fractions: contig9 0.75, NODE_7 0.5, contig10 0.5, k141_2 1.0, seq.with.dots 1/3, read1 1/1
DEFAULT = {"contig9": "virus", "NODE_7_length_2400_cov_3.1": "virus", "contig10": "virus", "k141_2": "virus",
           "nothing_kept": "no-frames", "seq.with.dots": "non-viral", "read1": "virus"}


@pytest.mark.parametrize(
    "calling,changed",
    [
        ({}, {}),
        ({"preset": "default"}, {}),
        ({"preset": "sensitive"}, {"seq.with.dots": "virus"}),
        ({"preset": "specific"}, {"NODE_7_length_2400_cov_3.1": "non-viral", "contig10": "non-viral", "read1": "too-short"}),
        ({"min_windows": 3}, {"NODE_7_length_2400_cov_3.1": "too-short", "k141_2": "too-short", "read1": "too-short"}),
        ({"min_viral_fraction": 0.3}, {"seq.with.dots": "virus"}),
        ({"min_viral_fraction": 1.0}, {"contig9": "non-viral", "NODE_7_length_2400_cov_3.1": "non-viral",
                                       "contig10": "non-viral"}),
        # explicit keys override the preset's value, the preset supplies the rest
        ({"preset": "specific", "min_windows": 1}, {"NODE_7_length_2400_cov_3.1": "non-viral", "contig10": "non-viral"}),
        ({"preset": "specific", "min_viral_fraction": 0.5}, {"read1": "too-short"}),
    ],
)
def test_calling_options(calling, changed):
    assert _calls(**calling) == {**DEFAULT, **changed}


def test_resolve_calling():
    assert resolve_calling({}) == {"min_viral_fraction": 0.5, "min_windows": 1}
    assert resolve_calling({"preset": "specific"}) == PRESETS["specific"] == {"min_viral_fraction": 0.75, "min_windows": 2}
    assert resolve_calling({"preset": "sensitive", "min_windows": 4}) == {"min_viral_fraction": 0.25, "min_windows": 4}
    with pytest.raises(InputError, match="calling.preset must be one of default, sensitive, specific, got 'loose'"):
        resolve_calling({"preset": "loose"})


def test_pair_call(tmp_path):
    records = tmp_path / "records.tsv"
    records.write_text("record_id\tlength\tchunks\tframes\tpair\n"
                       "a/1\t9\t1\t1\ta\na/2\t9\t1\t1\ta\nb/1\t9\t1\t1\tb\nb/2\t9\t1\t1\tb\nc/1\t9\t1\t1\tc\nc/2\t9\t1\t0\tc\n"
                       "d/1\t9\t1\t1\td\nd/2\t9\t1\t1\td\ne/1\t9\t1\t1\te\ne/2\t9\t1\t0\te\n")
    pred = pd.DataFrame({"Sequence_ID": ["a/1_chunk_1F1", "a/2_chunk_1R2", "b/1_chunk_1F1", "b/2_chunk_1F3", "c/1_chunk_1F1",
                                         "d/1_chunk_1F1", "d/2_chunk_1F2", "e/1_chunk_1F1"],
                         "score1": [0.1, 0.2, 0.9, 0.3, 0.8, 0.6, 0.7, 0.4], "score2": [0.9, 0.8, 0.1, 0.7, 0.2, 0.4, 0.3, 0.6]})
    s = summarise(records, pred, highest_scores(pred))
    assert list(s["call"]) == ["virus", "virus", "non-viral", "virus", "non-viral", "no-frames",
                               "non-viral", "non-viral", "virus", "no-frames"]
    assert list(s["pair"]) == ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    # c: no mate viral, but c/2 has no call: it may be viral, so not "neither"
    assert list(s["pair_call"]) == ["both", "both", "one", "one", "undetermined", "undetermined",
                                    "neither", "neither", "one", "one"]


def test_window_bed_coordinates_on_both_strands(tmp_path):
    pre = tmp_path / "pre"
    preprocess(ORIGINAL / "both_strands.fa", 300, pre / "c.fa", pre / "n.fa", pre / "p.faa", pre / "r.tsv")
    seqs, chunks, rid = {}, {}, None
    for line in (ORIGINAL / "both_strands.fa").read_text().splitlines():
        if line.startswith(">"):
            rid = line[1:].split()[0]
            seqs[rid] = ""
        else:
            seqs[rid] += line.strip()
    for line in (pre / "c.fa").read_text().splitlines():
        if line.startswith(">"):
            rid = line[1:]
            chunks[rid] = ""
        else:
            chunks[rid] += line
    frame_ids = [line[1:] for line in (pre / "p.faa").read_text().splitlines() if line.startswith(">")]
    scores = {fid: (i % 7) / 7 for i, fid in enumerate(frame_ids)}
    pred = pd.DataFrame({"Sequence_ID": frame_ids, "score1": [1 - v for v in scores.values()],
                         "score2": list(scores.values())})
    table = write_window_tracks(pre / "r.tsv", pred, 300, tmp_path / "w.bed", tmp_path / "w.tsv")
    bed = [line.split("\t") for line in (tmp_path / "w.bed").read_text().splitlines()]
    assert len(bed) == len(chunks) == len(table)
    strands_seen = set()
    for (chrom, start, end, name, score, strand), (wid, window) in zip(bed, chunks.items()):
        start, end = int(start), int(end)
        assert name == wid and strand == "."
        k = int(wid.rsplit("_chunk_", 1)[1])
        assert (start, end) == chunk_bounds(len(seqs[chrom]), 300)[k - 1]
        assert seqs[chrom][start:end] == window
        frames = {f.id[-2:]: f for f in identify_frames(wid, window)}
        for suffix, frame in frames.items():
            strands_seen.add(suffix[0])
            # each kept frame's nucleotides lie inside the window on its strand
            strand_seq = seqs[chrom][start:end].upper()
            target = strand_seq if suffix[0] == "F" else reverse_complement(strand_seq)
            assert frame.nucleotide in target
        expected = max((scores[wid + s] for s in frames), default=0.0)
        assert int(score) == round(expected * 1000)
    assert strands_seen == {"F", "R"}
    tsv = pd.read_csv(tmp_path / "w.tsv", sep="\t", keep_default_na=False)
    assert list(tsv.columns) == ["sequence_id", "start", "end", "window_id", "F1", "F2", "F3", "R1", "R2", "R3",
                                 "max_viral_score", "is_viral"]
    for _, row in tsv.iterrows():
        for s in ("F1", "F2", "F3", "R1", "R2", "R3"):
            fid = row["window_id"] + s
            assert (row[s] == "NA") if fid not in scores else abs(float(row[s]) - scores[fid]) < 1e-6


def test_too_short_is_decided_in_calling_only():
    from virnucflow.steps.calling import MIN_RECORD_LENGTH, call_sequences

    assert MIN_RECORD_LENGTH == 9
    # a sequence under 9 bp is too-short whatever its windows say; at 9 bp the windows decide
    calls = call_sequences([8, 9, 8, 9, 9], [1, 1, 0, 0, 1], [1.0, 1.0, float("nan"), float("nan"), 0.0])
    assert list(calls) == ["too-short", "virus", "too-short", "no-frames", "non-viral"]
