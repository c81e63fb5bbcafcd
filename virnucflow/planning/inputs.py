"""What the workflow knows about an input FASTA before preprocessing it.

- :func:`~virnucflow.io.opening.file_fingerprint`: size and BLAKE2b hash of the file's bytes (as
  stored: a gzip file is hashed compressed). The preprocess rule takes it as a
  parameter, so replacing an input by different content reruns preprocessing
  even when the new file is older (Snakemake alone compares times), and
  preprocessing records it in ``preprocess/input.json``.
- :func:`count_frames`: how many frames the preprocessing will keep, to size
  and cap the embedding shards: translated exactly for the first
  ``EXACT_WINDOWS`` windows, extrapolated over the rest of a larger file from
  their frames per window (reading only the records' lengths: the shard count
  needs the size of the work, and translating the whole file here cost as much
  as preprocessing it, before any job could start), and stopped at a limit.

Both read the whole file, so :func:`input_info` caches them in
``.snakemake/virnucflow/inputs.json`` keyed by the file's path, device, inode,
size, modification and status-change times (the status-change time cannot be
set back, so a replaced or rewritten file is always read again).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from virnucflow.io.atomic import atomic_outputs
from virnucflow.errors import VirNucFlowError
from virnucflow.io.opening import file_fingerprint

CACHE = Path(".snakemake") / "virnucflow" / "inputs.json"


EXACT_WINDOWS = 20_000  # windows translated exactly by count_frames; the rest is extrapolated


def count_frames(path: str | os.PathLike, chunk_length: int, limit: int,
                 exact_windows: int = EXACT_WINDOWS) -> int | None:
    """Frames the preprocessing keeps from ``path``, at most ``limit``, or None when the
    file cannot be read as FASTA or FASTQ (the preprocess job then says why).

    Exact for a file of at most ``exact_windows`` windows (or once ``limit`` is
    reached within them); beyond that, the first ``exact_windows`` windows'
    frames per window times the file's windows, rounded (the records' lengths
    are read, not translated)."""
    from virnucflow.steps.preprocess import chunk_bounds, preprocess_records
    from virnucflow.io.reads import read_sequences

    frames = windows = sampled_frames = sampled_windows = 0
    try:
        for record in read_sequences(path, check_duplicates=False):
            if windows >= exact_windows:
                windows += len(chunk_bounds(len(record.seq), chunk_length))
                continue
            kept = preprocess_records([(record.id, record.seq)], chunk_length, paired=False)[-1]
            frames, windows = frames + kept.frames, windows + kept.chunks
            if frames >= limit:
                return limit
            sampled_frames, sampled_windows = frames, windows
    except Exception:  # noqa: BLE001 - any unreadable input: no count, the job says what is wrong
        return None
    if windows > sampled_windows:
        frames = round(sampled_frames * windows / sampled_windows)
    return min(frames, limit)


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def input_info(path: str | os.PathLike, chunk_length: int, limit: int,
               cache: str | os.PathLike | None = CACHE) -> dict | None:
    """Fingerprint of ``path`` and its frame count up to ``limit`` (cached); None when it
    is not a readable file. ``frames`` is exact when below ``limit``."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    if not p.is_file():
        return None
    key = str(p.resolve())
    entries: dict = {}
    if cache is not None:
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(Path(cache).read_text())
    entry = entries.get(key)
    if not entry or entry.get("signature") != _signature(st):
        try:
            entry = {"signature": _signature(st), **file_fingerprint(p), "frames": {}}
        except OSError:
            return None
    counted = entry["frames"].get(str(chunk_length))  # [count, limit it was counted up to]
    # no count yet, one that stopped below the limit now asked for, or none (unreadable; also FASTQ
    # before it was counted, so a cache written then is counted again)
    if counted is None or counted[0] is None or (counted[0] >= counted[1] and counted[1] < limit):
        entry["frames"][str(chunk_length)] = counted = [count_frames(p, chunk_length, limit), limit]
        entries[key] = entry
        if cache is not None:
            with contextlib.suppress(OSError, VirNucFlowError):
                with atomic_outputs([cache]) as (tmp,):
                    Path(tmp).write_text(json.dumps(entries, sort_keys=True))
    frames = counted[0] if counted[0] is None else min(counted[0], limit)
    return {"size": entry["size"], "blake2b": entry["blake2b"], "frames": frames}
