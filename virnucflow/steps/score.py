"""Score one shard: its models' vectors (DNABERT-S and ESM-2) through the VirNucPro classifier.

The classifier is an MLP over 3,328 values: a shard's frames cost
milliseconds once their vectors exist, so each shard is scored as soon as its
embedding job ends (while the next shard embeds), and nothing after this step
needs the vectors (13.3 kB per frame), only the two scores (about 60 bytes per
frame of text). The vectors can then be removed (``output.embeddings``).

Outputs, per shard:

- ``scores`` (TSV, :data:`SCORE_COLUMNS`): per frame, in the shard's order,
  its sample, position in the sample, ID, the original's prediction and its two
  scores as the original writes them (``str(numpy.float32)``);
- ``info`` (JSON): frames, the samples' parts, whether demo models were used
  (the outputs then carry the demo banner), the classifier.

Rows are checked before scoring: both files list the same frames in the same
order (IDs, positions and sample parts), and every value is finite. Each
sample's frames are scored in the batches scoring it whole makes (rows
``k * BATCH`` to ``(k + 1) * BATCH`` of the sample; the shards are cut there),
so the scores do not depend on the shard layout.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator, Mapping

import numpy as np

from virnucflow import __version__
from virnucflow.io.atomic import atomic_outputs
from virnucflow.errors import MergeError, NumericalError
from virnucflow.io.features import Embeddings, _listed, _nonfinite_rows, read_h5

log = logging.getLogger("virnucflow")
SCORE_COLUMNS = ["sample", "index", "id", "prediction", "score1", "score2"]


def _parts(table: Embeddings) -> list[tuple[str, int]]:
    parts = table.attrs.get("samples")
    if isinstance(parts, str):
        parts = json.loads(parts)
    return [(str(s), int(n)) for s, n in parts] if parts else [("", len(table.ids))]


def check_rows(tables: Mapping[str, Embeddings]) -> None:
    """The models' files of one shard (``tables``: file name -> vectors) hold the same frames in the same
    order, all finite."""
    (first, ref), *others = tables.items()
    for name, table in others:
        names = (first, name)
        if _parts(ref) != _parts(table) or len(ref.ids) != len(table.ids):
            raise MergeError(f"{names[0]} and {names[1]} do not hold the same frames "
                             f"({len(ref.ids)} vs {len(table.ids)} rows): rerun this shard's embedding")
        moved = [i for i, (a, b) in enumerate(zip(ref.ids, table.ids)) if a != b]
        moved += list(np.flatnonzero(ref.index != table.index))
        if moved:
            raise MergeError(f"{names[0]} and {names[1]} disagree on the frames at rows {sorted(set(moved))[:10]} "
                             f"(e.g. {ref.ids[moved[0]]!r}): rerun this shard's embedding")
    bad = np.zeros(len(ref.ids), dtype=bool)
    for table in tables.values():
        bad |= _nonfinite_rows(table.vectors)
    if bad.any():
        raise NumericalError(f"non-finite feature values for {_listed([ref.ids[k] for k in np.flatnonzero(bad)])}")


def batches(index: np.ndarray, parts: list[tuple[str, int]], size: int) -> Iterator[tuple[str, int, int]]:
    """(sample, first row, stop row) of each classifier batch: a sample's rows ``k * size`` to ``(k + 1) * size``."""
    start = 0
    for sample, n in parts:
        rows = index[start:start + n]
        if n and (np.any(np.diff(rows) != 1)):
            raise MergeError(f"sample {sample!r}: the shard's frames are not consecutive")
        cuts = [start] + [start + int(k) for k in np.flatnonzero(rows % size == 0) if k > 0] + [start + n]
        for a, b in zip(cuts, cuts[1:]):
            for lo in range(a, b, size):
                yield sample, lo, min(lo + size, b)
        start += n


def score_shard(embeddings: Mapping[str, str | os.PathLike], classifier: str | os.PathLike,
                scores_out: str | os.PathLike, info_out: str | os.PathLike) -> int:
    """Score one shard's frames (``embeddings``: model name -> its embedding file, in feature order;
    ``classifier``: the classifier's manifest or ``.pth``); returns the frames."""
    import torch

    from virnucflow.models.classifier import BATCH, classify, load_classifier

    tables = [read_h5(path, mmap=True) for path in embeddings.values()]
    check_rows({str(path): t for path, t in zip(embeddings.values(), tables)})
    ref = tables[0]
    path = str(classifier)
    if path.endswith(".json"):
        with open(path) as f:
            path = json.load(f)["classifier"]["path"]
    model, meta = load_classifier(path)
    parts = _parts(ref)
    dims = [t.vectors.shape[1] for t in tables]
    if not ref.ids:  # no frames: the widths are still checked
        classify(model, torch.zeros((0, sum(dims))))
    block = np.empty((min(BATCH, max(len(ref.ids), 1)), sum(dims)), np.float32)
    columns = np.cumsum([0] + dims)
    with atomic_outputs([scores_out, info_out]) as (tmp_scores, tmp_info):
        with open(tmp_scores, "w") as out:
            out.write("\t".join(SCORE_COLUMNS) + "\n")
            for sample, a, b in batches(ref.index, parts, BATCH):
                rows = block[: b - a]
                for t, lo, hi in zip(tables, columns, columns[1:]):
                    rows[:, lo:hi] = t.vectors[a:b]
                scores = classify(model, torch.from_numpy(rows)).numpy()
                finite = np.isfinite(scores).all(axis=1)
                if not finite.all():
                    k = int(np.argmin(finite))
                    raise NumericalError(f"{scores_out}: frame {ref.ids[a + k]} of sample {sample!r} scores "
                                         f"{scores[k].tolist()} (not finite): no scores written; the classifier "
                                         f"({path}) or this frame's embedding is broken")
                for k, (s1, s2) in enumerate(scores):
                    # torch.max semantics: the first maximum wins, so a tie is "others".
                    call = "virus" if s2 > s1 else "others"
                    out.write(f"{sample}\t{ref.index[a + k]}\t{ref.ids[a + k]}\t{call}\t{str(s1)}\t{str(s2)}\n")
        info: dict[str, Any] = {
            "frames": len(ref.ids), "samples": [list(p) for p in parts],
            "demo": bool(meta["demo_model"] or any(t.attrs.get("demo_model") for t in tables)),
            "classifier": path, "workflow_version": __version__,
        }
        with open(tmp_info, "w") as f:
            json.dump(info, f, indent=1, sort_keys=True, default=str)
            f.write("\n")
    log.info("%s: %d frames scored", scores_out, len(ref.ids))
    return len(ref.ids)
