"""How a sequence's window calls become its call in ``summary.tsv``.

The per-window rule is the original's and never changes: a window is viral
when its highest frame viral score (score2) is at least its highest frame
non-viral score (score1). A sequence is then called from its scored windows:

- ``too-short``: a sequence shorter than :data:`MIN_RECORD_LENGTH` (9 bp, three
  codons), whatever its frames score (they are still scored and written to the
  per-frame and per-window outputs, as the original does), or one with fewer
  than ``min_windows`` scored windows;
- ``no-frames``: no window had a frame without a stop codon (nothing scored);
- ``virus``: at least ``min_viral_fraction`` of its scored windows are viral;
- ``non-viral``: otherwise.

``calling.preset`` picks both thresholds; ``calling.min_viral_fraction`` and
``calling.min_windows``, when given, override the preset's value (explicit keys
win, the preset fills in the rest). ``default`` reproduces VirNucPro-style
majority calls.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from virnucflow.errors import InputError

#: Sequences shorter than this many bases (three codons) are called ``too-short``.
MIN_RECORD_LENGTH = 9

#: preset -> (min_viral_fraction, min_windows)
PRESETS: dict[str, dict[str, float | int]] = {
    "default": {"min_viral_fraction": 0.5, "min_windows": 1},
    "sensitive": {"min_viral_fraction": 0.25, "min_windows": 1},
    "specific": {"min_viral_fraction": 0.75, "min_windows": 2},
}


def resolve_calling(calling: Mapping | None) -> dict[str, float | int]:
    """Thresholds from the config's ``calling`` section: the preset, then explicit keys."""
    calling = dict(calling or {})
    preset = calling.get("preset", "default")
    if preset not in PRESETS:
        raise InputError(f"calling.preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    out = dict(PRESETS[preset])
    for key in ("min_viral_fraction", "min_windows"):
        if calling.get(key) is not None:
            out[key] = calling[key]
    if not 0 <= float(out["min_viral_fraction"]) <= 1:
        raise InputError(f"calling.min_viral_fraction must be between 0 and 1, got {out['min_viral_fraction']}")
    if int(out["min_windows"]) < 1:
        raise InputError(f"calling.min_windows must be at least 1, got {out['min_windows']}")
    return {"min_viral_fraction": float(out["min_viral_fraction"]), "min_windows": int(out["min_windows"])}


def call_sequences(
    lengths: np.ndarray,
    chunks_scored: np.ndarray,
    viral_fraction: np.ndarray,
    min_viral_fraction: float = 0.5,
    min_windows: int = 1,
) -> np.ndarray:
    """The call of each sequence from its length, its number of scored windows and their viral fraction."""
    lengths = np.asarray(lengths)
    chunks_scored = np.asarray(chunks_scored)
    frac = np.asarray(viral_fraction, dtype=float)
    return np.select(
        [lengths < MIN_RECORD_LENGTH, chunks_scored == 0, chunks_scored < min_windows, frac >= min_viral_fraction],
        ["too-short", "no-frames", "too-short", "virus"],
        default="non-viral",
    )


def pair_calls(pairs: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Per mate, the call of its pair: ``both``, ``one`` or ``neither`` mate viral, or
    ``undetermined`` when no mate is viral and a mate has no call (``too-short`` or
    ``no-frames``): that mate may be viral, so "neither" would claim too much."""
    import pandas as pd

    calls = np.asarray(calls)
    by_pair = pd.DataFrame({"viral": calls == "virus", "called": np.isin(calls, ["virus", "non-viral"])})
    grouped = by_pair.groupby(np.asarray(pairs))
    n = grouped["viral"].transform("sum").to_numpy()
    all_called = grouped["called"].transform("all").to_numpy()
    return np.select([n >= 2, n == 1, all_called], ["both", "one", "neither"], default="undetermined")
