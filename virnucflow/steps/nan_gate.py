"""The NaN/Inf gate of a batch: what the embedding jobs recomputed in FP32, checked before its calls.

Each embedding job heals non-finite vectors itself (``steps.embed.embed_shard``) and
lists them in ``results/batches/{batch}/nonfinite/{model}/{shard}.tsv``. :func:`nan_gate` gathers
those lists for a batch (one sample, or several pooled), writes one row per shard and model (frames,
recomputed, failed) and stops the run when anything is still non-finite, or
when a model needed FP32 for more than ``qc.max_fp32_recompute_fraction`` of
its frames: then the configured precision is not serving this data, and the
message says which edit rolls it back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from virnucflow.errors import NumericalError
from virnucflow.io.features import read_info
from virnucflow.io.tables import read_tsv, write_tsv

log = logging.getLogger("virnucflow")
GATE_COLUMNS = ["model", "shard", "frames", "precision", "recomputed_fp32", "failed"]


def nan_gate(models: Sequence[str], infos: Sequence[str | os.PathLike], nonfinite: Sequence[str | os.PathLike],
             out: str | os.PathLike, max_fraction: float) -> pd.DataFrame:
    """``infos``: each shard's embedding record (:func:`virnucflow.io.features.write_embedding_info`: frames and
    precision per model);
    ``nonfinite``: the shards' non-finite tables, model by model (``models[0]``'s shards first)."""
    if len(nonfinite) != len(models) * len(infos):
        raise ValueError(f"{len(nonfinite)} non-finite tables for {len(models)} models and {len(infos)} shards")
    shards = [(Path(p).stem, read_info(p)) for p in infos]
    rows = []
    for k, listed in enumerate(nonfinite):
        name = models[k // len(infos)]
        shard, info = shards[k % len(infos)]
        entry = info["models"].get(name, {})
        records = read_tsv(listed, dtype=str)
        rows.append({"model": name, "shard": shard, "frames": int(entry.get("frames", 0)),
                     "precision": str(entry.get("precision", "")), "recomputed_fp32": len(records),
                     "failed": int((records.get("finite_after_recompute", pd.Series(dtype=str)) != "yes").sum())})
    table = pd.DataFrame(rows, columns=GATE_COLUMNS)
    for line in table.to_string(index=False).splitlines():
        log.info("%s", line)
    totals = table.groupby("model", sort=False)[["frames", "recomputed_fp32", "failed"]].sum()
    for name, t in totals.iterrows():
        if t["failed"]:
            raise NumericalError(f"{name}: {t['failed']} frames are not finite even in fp32 (see {Path(out).parent}/nonfinite/{name}/)")
        fraction = t["recomputed_fp32"] / t["frames"] if t["frames"] else 0.0
        if fraction > max_fraction:
            used = ", ".join(sorted(set(table.loc[table["model"] == name, "precision"]) - {""}))
            raise NumericalError(
                f"{name}: {t['recomputed_fp32']} of {t['frames']} frames ({fraction:.2%}) had non-finite vectors in "
                f"{used} and were recomputed in fp32, more than qc.max_fp32_recompute_fraction ({max_fraction:g}): "
                f"{used} is not serving this data; set embedding.{name}.precision: fp32 (or embedding.precision: fp32) "
                "in the config and rerun"
            )
        if t["recomputed_fp32"]:
            log.warning("%s: %d of %d frames recomputed in fp32 (%.3f%%, limit %.3f%%)", name, t["recomputed_fp32"],
                        t["frames"], 100 * fraction, 100 * max_fraction)
    write_tsv(out, table)
    return table
