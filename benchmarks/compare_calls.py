"""Each sample's calls in one run against another run of the same reads (e.g. a plate of samples
against the same reads as one sample): per-frame scores matched by frame ID, per-sequence calls by
sequence ID. Prints one JSON line: frames and sequences compared, score differences, mismatched calls.

    python benchmarks/compare_calls.py WORKDIR_A WORKDIR_B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def _table(work: Path, name: str) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", comment="#", dtype={"Sequence_ID": str, "sequence_id": str})
              for p in sorted((work / "results").glob(f"*/{name}")) if p.parent.name != "batches"]
    return pd.concat(frames, ignore_index=True)


def compare(a: Path, b: Path) -> dict:
    pa, pb = _table(a, "prediction_results.txt"), _table(b, "prediction_results.txt")
    scores = pa.merge(pb, on="Sequence_ID", suffixes=("_a", "_b"))
    sa, sb = _table(a, "summary.tsv"), _table(b, "summary.tsv")
    calls = sa.merge(sb, on="sequence_id", suffixes=("_a", "_b"))
    return {
        "frames_a": len(pa), "frames_b": len(pb), "frames_compared": len(scores),
        "max_abs_score_diff": float(max((scores["score1_a"] - scores["score1_b"]).abs().max(),
                                        (scores["score2_a"] - scores["score2_b"]).abs().max())),
        "frame_calls_differing": int((scores["Prediction_a"] != scores["Prediction_b"]).sum()),
        "sequences_compared": len(calls), "sequence_calls_differing": int((calls["call_a"] != calls["call_b"]).sum()),
    }


if __name__ == "__main__":
    print(json.dumps(compare(Path(sys.argv[1]), Path(sys.argv[2]))))
