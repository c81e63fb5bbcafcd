"""Figures and tables for ``snakemake --report``: per sample and per run.

Per sample (:func:`sample_figures`, one PNG of four panels): counts of
sequences by call, the distribution of max viral scores, viral window
fraction against sequence length, and windows per sequence.

Per run (:func:`run_tables`): a TSV per embedding job (model, sample, shard,
frames, unique frames, dedup saving, tokens, tokens/s, wall time, precision,
attention backend, device) and a PNG of wall time per rule summed over jobs
from the ``benchmark:`` files (``s`` column; on a GPU host every embedding
job's wall time is GPU time, one GPU per job).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from .atomic import atomic_outputs
from .tables import read_tsv, write_tsv

CALL_ORDER = ["virus", "non-viral", "too-short", "no-frames"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample_figures(summary_tsv: str | os.PathLike, sample: str, out_png: str | os.PathLike) -> None:
    plt = _pyplot()
    s = read_tsv(summary_tsv)
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    counts = s["call"].value_counts().reindex(CALL_ORDER, fill_value=0)
    bars = ax[0, 0].bar(counts.index, counts.values, color=["#c0392b", "#2e86c1", "#aab7b8", "#7f8c8d"])
    ax[0, 0].bar_label(bars)
    ax[0, 0].set(title="Sequences by call", ylabel="sequences")
    scores = pd.to_numeric(s["max_viral_score"], errors="coerce").dropna()
    ax[0, 1].hist(scores, bins=[i / 20 for i in range(21)], color="#884ea0")
    ax[0, 1].set(title="Max viral score per sequence", xlabel="max viral score (score2)", ylabel="sequences", xlim=(0, 1))
    frac = pd.to_numeric(s["viral_chunk_fraction"], errors="coerce")
    colors = s["call"].map({"virus": "#c0392b", "non-viral": "#2e86c1"}).fillna("#7f8c8d")
    ax[1, 0].scatter(s["length"], frac, c=colors, s=14)
    ax[1, 0].set(title="Viral window fraction vs length", xlabel="sequence length (bp)",
                 ylabel="viral windows / scored windows", ylim=(-0.05, 1.05))
    if len(s) and s["length"].max() > 10 * max(s["length"].min(), 1):
        ax[1, 0].set_xscale("log")
    ax[1, 1].hist(s["chunks"], bins=min(30, max(int(s["chunks"].max()), 1)), color="#138d75")
    ax[1, 1].set(title="Windows per sequence", xlabel="windows", ylabel="sequences")
    fig.suptitle(f"{sample}: {len(s)} sequences")
    fig.tight_layout()
    with atomic_outputs([out_png]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def embedding_jobs(embedding_files: Sequence[str | os.PathLike], benchmark_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per embedding job, from its HDF5 attributes and its benchmark file."""
    import h5py

    rows = []
    for path in map(Path, embedding_files):
        sample, model, shard = path.parts[-4], path.parts[-2], path.stem
        with h5py.File(path, "r") as h5:
            a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
        stats = json.loads(a.get("stats", "{}")) if isinstance(a.get("stats"), str) else {}
        bench = Path(benchmark_dir) / sample / f"embed_{model}" / f"{shard}.tsv"
        wall = float(pd.read_csv(bench, sep="\t")["s"].iloc[0]) if bench.exists() else float("nan")
        rows.append({
            "sample": sample, "model": model, "shard": shard, "frames": stats.get("sequences"),
            "unique": stats.get("unique_sequences"), "dedup_saving": round(stats.get("dedup_saving", 0.0), 4),
            "tokens": stats.get("tokens"), "tokens_per_second": round(stats.get("tokens_per_second", 0.0)),
            "wall_s": wall, "precision": a.get("precision"), "attention": a.get("attention"),
            "device": a.get("device"), "model_spec": a.get("model_spec"),
        })
    return pd.DataFrame(rows)


def rule_times(benchmark_dir: str | os.PathLike) -> pd.DataFrame:
    """Wall time per rule summed over its jobs (``logs/benchmarks/**.tsv``)."""
    rows = []
    root = Path(benchmark_dir)
    for f in sorted(root.rglob("*.tsv")):
        rel = f.relative_to(root).parts
        rule = f.stem if len(rel) <= 2 else rel[-2]  # {rule}.tsv, {sample}/{rule}.tsv, {sample}/{rule}/{item}.tsv
        t = pd.read_csv(f, sep="\t")
        rows.append({"rule": rule, "jobs": 1, "wall_s": float(t["s"].iloc[0])})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "wall_s"])
    return pd.DataFrame(rows).groupby("rule", as_index=False).sum().sort_values("wall_s", ascending=False)


def run_tables(
    embedding_files: Sequence[str | os.PathLike],
    benchmark_dir: str | os.PathLike,
    jobs_tsv: str | os.PathLike,
    times_png: str | os.PathLike,
) -> None:
    plt = _pyplot()
    write_tsv(jobs_tsv, embedding_jobs(embedding_files, benchmark_dir))
    times = rule_times(benchmark_dir)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(times) + 1.5))
    bars = ax.barh(times["rule"], times["wall_s"], color="#5d6d7e")
    ax.bar_label(bars, labels=[f"{s:.1f} s ({j} jobs)" for s, j in zip(times["wall_s"], times["jobs"])], padding=3)
    ax.invert_yaxis()
    ax.set(title="Wall time per rule (sum over its jobs, from the benchmark files)", xlabel="seconds")
    ax.margins(x=0.3)
    fig.tight_layout()
    with atomic_outputs([times_png]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
