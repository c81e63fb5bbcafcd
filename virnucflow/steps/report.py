"""Figures and tables for ``snakemake --report``: per sample and per run.

Per sample (:func:`sample_figures`, one PNG of four panels): counts of
sequences by call, the distribution of max viral scores, viral window
fraction against sequence length, and windows per sequence.

Per run (:func:`run_tables`): a table of the inputs per sample (input files,
format, records, bases, read pairs, windows, frames, unique frames and dedup
saving per model), a TSV per embedding job (model, sample, shard, frames,
unique frames, dedup saving, tokens, tokens/s, wall time, precision,
attention backend, device) and wall time, CPU time and GPU time per rule
summed over jobs from the ``benchmark:`` files (table and PNG). GPU time is
the wall time of the jobs that ran on a CUDA device (the device recorded in
each embedding file; one GPU per job): Snakemake's benchmark files have no
GPU column.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from virnucflow.models.registry import names
from virnucflow.io.atomic import atomic_outputs
from virnucflow.io.tables import has_demo_banner, read_tsv, write_tsv

CALL_ORDER = ["virus", "non-viral", "too-short", "no-frames"]
#: Dots at most in the per-sample scatter (a random, fixed sample beyond that).
SCATTER_MAX = 100_000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample_figures(summary_tsv: str | os.PathLike, sample: str, out_png: str | os.PathLike) -> None:
    plt = _pyplot()
    import numpy as np
    from matplotlib.ticker import MaxNLocator, NullFormatter

    # the five columns the figure shows, compactly: memory stays small for tens of millions of sequences
    s = read_tsv(summary_tsv, usecols=["length", "chunks", "viral_chunk_fraction", "max_viral_score", "call"],
                 dtype={"length": "int64", "chunks": "int32", "call": "category"},
                 na_values={"viral_chunk_fraction": ["NA"], "max_viral_score": ["NA"]})
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    counts = s["call"].value_counts()
    counts.index = counts.index.astype(str)
    counts = counts.reindex(CALL_ORDER, fill_value=0)
    bars = ax[0, 0].bar(counts.index, counts.values, color=["#c0392b", "#2e86c1", "#aab7b8", "#7f8c8d"])
    ax[0, 0].bar_label(bars)
    ax[0, 0].set(title="Sequences by call", ylabel="sequences")
    ax[0, 0].margins(y=0.1)
    scores = pd.to_numeric(s["max_viral_score"], errors="coerce").dropna()
    ax[0, 1].hist(scores, bins=[i / 20 for i in range(21)], color="#884ea0")
    ax[0, 1].set(title="Max viral score per sequence", xlabel="max viral score (score2)", ylabel="sequences", xlim=(0, 1))
    frac = pd.to_numeric(s["viral_chunk_fraction"], errors="coerce")
    shown = np.arange(len(s))
    if len(s) > SCATTER_MAX:  # a random, fixed sample of the dots (the other panels count every sequence)
        shown = np.sort(np.random.default_rng(0).choice(len(s), SCATTER_MAX, replace=False))
    colors = s["call"].iloc[shown].astype(str).map({"virus": "#c0392b", "non-viral": "#2e86c1"}).fillna("#7f8c8d")
    ax[1, 0].scatter(s["length"].to_numpy()[shown], frac.to_numpy()[shown], c=colors.to_numpy(), s=14)
    ax[1, 0].set(title="Viral window fraction vs length" + (f" ({SCATTER_MAX:,} of {len(s):,} sequences)"
                                                             if len(s) > SCATTER_MAX else ""),
                 xlabel="sequence length (bp)",
                 ylabel="viral windows / scored windows", ylim=(-0.05, 1.05))
    if len(s) and s["length"].max() > 10 * max(s["length"].min(), 1):
        ax[1, 0].set_xscale("log")
        ax[1, 0].set_xlabel("sequence length (bp, log scale)")
        ax[1, 0].xaxis.set_minor_formatter(NullFormatter())  # 2x10^2, 3x10^2... labels overlap
    most = max(int(s["chunks"].max()), 1) if len(s) else 1
    edges = np.arange(0.5, most + 1.5) if most <= 30 else np.linspace(0.5, most + 0.5, 31)  # whole windows
    ax[1, 1].hist(s["chunks"], bins=edges, color="#138d75")
    ax[1, 1].set(title="Windows per sequence", xlabel="windows", ylabel="sequences")
    for a in (ax[0, 1], ax[1, 1]):
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax[1, 1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if has_demo_banner(summary_tsv):
        fig.suptitle(f"{sample}: {len(s)} sequences. DEMO MODELS (random weights): these calls mean nothing",
                     color="#c0392b", fontweight="bold")
    else:
        fig.suptitle(f"{sample}: {len(s)} sequences")
    fig.tight_layout()
    with atomic_outputs([out_png]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def embedding_jobs(info_files: Sequence[str | os.PathLike], benchmark_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per shard and model, from the shard's embedding record (the embedding files' attributes,
    :func:`virnucflow.io.features.write_embedding_info`) and its embedding job's benchmark file.

    ``load_s``/``compute_s``: that model's load (with tokenisation) and compute
    seconds; ``job_wall_s``: the shard's job, both models (on a GPU host, one
    GPU per job: the GPU time).
    """
    from virnucflow.io.features import read_info

    rows = []
    for path in map(Path, info_files):
        batch, shard = path.parts[-3], path.stem
        info = read_info(path)
        bench = Path(benchmark_dir) / "batches" / batch / "embed" / f"{shard}.tsv"  # the shard's job: both models
        wall = float(pd.read_csv(bench, sep="\t")["s"].iloc[0]) if bench.exists() else float("nan")
        for model, a in info["models"].items():
            stats = a.get("stats", {})
            rows.append({
                "batch": batch, "samples": ",".join(s for s, _ in info.get("samples", [])), "model": model,
                "shard": shard, "frames": stats.get("sequences", a.get("frames")),
                "unique": stats.get("unique_sequences"), "dedup_saving": round(stats.get("dedup_saving", 0.0), 4),
                "tokens": stats.get("tokens"), "tokens_if_no_dedup": stats.get("tokens_if_no_dedup", stats.get("tokens")),
                "tokens_per_second": round(stats.get("tokens_per_second", 0.0)),
                "load_s": round(stats.get("seconds_load", float("nan")), 2),
                "compute_s": round(stats.get("seconds_compute", float("nan")), 2), "job_wall_s": wall,
                "precision": a.get("precision"), "attention": a.get("attention"), "device": a.get("device"),
                "model_spec": a.get("model_spec"),
            })
    return pd.DataFrame(rows)


def _file_format(path: str | os.PathLike) -> str:
    """``FASTA``/``FASTQ``/``SAM``/``BAM``/``CRAM``, with ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` when
    compressed, from the content (``?`` if unreadable now)."""
    from virnucflow.io.opening import compression
    from virnucflow.io.reads import detect_format

    try:
        fmt = detect_format(path)
        packed = compression(path)
        return fmt.upper() + (f".{packed}" if packed and fmt != "bam" else "")
    except Exception:  # the report describes, it does not validate: the run has read the file already
        return "?"


def input_table(
    inputs: dict[str, Sequence[str]],
    records_tsvs: dict[str, str | os.PathLike],
    sources: dict[str, str | os.PathLike],
    jobs: pd.DataFrame,
    batches: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Per sample: input files and format, records, bases, read pairs, windows, frames, its batch, dedup per model
    (``NA`` for a sample pooled with others: its batch's jobs deduplicated their frames together), and a
    note (``no sequences`` for an empty input).

    ``inputs``: sample -> its input files (FASTA/FASTQ, then mate 2 if paired);
    ``records_tsvs`` / ``sources``: its ``preprocess/records.tsv`` and
    ``preprocess/input.json``; ``jobs``: :func:`embedding_jobs`' table (unique
    frames and tokens saved are summed over the sample's embedding jobs,
    each of which deduplicates its own shard).
    """
    rows = []
    for sample, files in inputs.items():
        rec = read_tsv(records_tsvs[sample], dtype={"record_id": str})
        with open(sources[sample]) as f:
            src = json.load(f)
        row = {
            "sample": sample,
            "input": " + ".join(map(str, files)),
            "format": " + ".join(_file_format(p) for p in files),
            "size_bytes": int(src.get("size", 0)) + sum(Path(p).stat().st_size for p in files[1:] if Path(p).exists()),
            "records": len(rec),
            "bases": int(rec["length"].sum()),
            "read_pairs": int(rec["pair"].nunique()) if "pair" in rec.columns else "NA",
            "windows": int(rec["chunks"].sum()),
            "frames": int(rec["frames"].sum()),
        }
        batch = (batches or {}).get(sample, sample)
        row["batch"] = batch
        alone = sum(b == batch for b in (batches or {sample: sample}).values()) == 1
        for model in names():
            if not alone:  # the batch's jobs deduplicated several samples' frames together: see embedding_jobs.tsv
                row[f"{model}_unique_frames"] = row[f"{model}_dedup_saving"] = "NA"
                continue
            mine = jobs[(jobs["batch"] == batch) & (jobs["model"] == model)] if len(jobs) else jobs
            unique = pd.to_numeric(mine.get("unique"), errors="coerce") if len(mine) else None
            row[f"{model}_unique_frames"] = int(unique.sum()) if unique is not None else "NA"
            tokens = pd.to_numeric(mine.get("tokens"), errors="coerce") if len(mine) else None
            no_dedup = pd.to_numeric(mine.get("tokens_if_no_dedup"), errors="coerce") if len(mine) else None
            row[f"{model}_dedup_saving"] = (round(1 - tokens.sum() / no_dedup.sum(), 4)
                                            if no_dedup is not None and no_dedup.sum() > 0 else 0.0)
        row["note"] = "no sequences: outputs hold headers only" if not len(rec) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def benchmark_rule(rel: Sequence[str]) -> str:
    """The rule a benchmark file belongs to, from its path parts under ``logs/benchmarks/``:
    ``{rule}.tsv``, ``{sample}/{rule}.tsv``, ``{sample}/{rule}/{item}.tsv``; ``models/{model}.tsv`` is
    check_model's (no sample may be called "models")."""
    if rel[0] == "models" and len(rel) == 2:
        return "check_model"
    if rel[0] == "batches":  # batches/{batch}/{rule}.tsv, batches/{batch}/{rule}/{shard}.tsv
        rel = rel[2:]
        return Path(rel[0]).stem
    return Path(rel[-1]).stem if len(rel) <= 2 else rel[-2]


def rule_times(benchmark_dir: str | os.PathLike, jobs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Wall, CPU and GPU time per rule summed over its jobs (``logs/benchmarks/**.tsv``).

    GPU time: the wall time of the embedding jobs whose file records a CUDA
    device (``jobs``: :func:`embedding_jobs`' table), one GPU per job.
    """
    on_gpu = set()
    if jobs is not None and len(jobs):
        for _, j in jobs[jobs["device"].astype(str).str.startswith("cuda")].iterrows():
            on_gpu.add(("batches", j["batch"], "embed", j["shard"]))
    rows = []
    root = Path(benchmark_dir)
    for f in sorted(root.rglob("*.tsv")):
        rel = f.relative_to(root).parts
        rule = benchmark_rule(rel)
        t = pd.read_csv(f, sep="\t")
        wall = float(t["s"].iloc[0])
        cpu = float(t["cpu_time"].iloc[0]) if "cpu_time" in t.columns else float("nan")
        gpu = wall if len(rel) == 4 and (*rel[:3], f.stem) in on_gpu else 0.0
        rows.append({"rule": rule, "jobs": 1, "wall_s": wall, "cpu_s": cpu, "gpu_s": gpu})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "wall_s", "cpu_s", "gpu_s"])
    out = pd.DataFrame(rows).groupby("rule", as_index=False).sum().sort_values("wall_s", ascending=False)
    return out.round({"wall_s": 2, "cpu_s": 2, "gpu_s": 2})


def run_tables(
    info_files: Sequence[str | os.PathLike],
    benchmark_dir: str | os.PathLike,
    jobs_tsv: str | os.PathLike,
    times_png: str | os.PathLike,
    times_tsv: str | os.PathLike | None = None,
    inputs_tsv: str | os.PathLike | None = None,
    inputs: dict[str, Sequence[str]] | None = None,
    records_tsvs: dict[str, str | os.PathLike] | None = None,
    sources: dict[str, str | os.PathLike] | None = None,
    batches: dict[str, str] | None = None,
) -> None:
    plt = _pyplot()
    jobs = embedding_jobs(info_files, benchmark_dir)
    write_tsv(jobs_tsv, jobs.drop(columns=["tokens_if_no_dedup"], errors="ignore"))
    if inputs_tsv is not None:
        write_tsv(inputs_tsv, input_table(inputs or {}, records_tsvs or {}, sources or {}, jobs, batches))
    times = rule_times(benchmark_dir, jobs)
    if times_tsv is not None:
        write_tsv(times_tsv, times)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(times) + 1.5))
    bars = ax.barh(times["rule"], times["wall_s"], color="#5d6d7e", label="wall time")
    ax.barh(times["rule"], times["gpu_s"], color="#e67e22", height=0.4, label="GPU time (jobs on a CUDA device)")
    labels = [f"{s:.1f} s ({j} job{'s' if j != 1 else ''}" + (f", {g:.1f} GPU s)" if g > 0 else ")")
              for s, j, g in zip(times["wall_s"], times["jobs"], times["gpu_s"])]
    ax.bar_label(bars, labels=labels, padding=3)
    ax.invert_yaxis()
    total_gpu = float(times["gpu_s"].sum()) if len(times) else 0.0
    ax.set(title="Wall time per rule (sum over its jobs, from the benchmark files)",
           xlabel="seconds" + ("" if total_gpu > 0 else "  (no job ran on a GPU: GPU time 0)"))
    ax.legend(loc="lower right", fontsize="small")
    ax.margins(x=0.3)
    fig.tight_layout()
    with atomic_outputs([times_png]) as (tmp,):
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
