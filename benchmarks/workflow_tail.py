"""The steps after the embedding, on the CPU: how long the GPU's results wait for the calls.

Everything after the last embedding job runs on CPUs while a GPU allocation is
idle or gone: the NaN/Inf gate, the prediction (and the merge into
``features.h5`` where configured), the window tracks and the report's figures.
This script measures that part of the workflow without a GPU:

1. a read set like ``workflow_gpu.py``'s (300-1,200 bp, half lambda fragments,
   half host-like; 200,000 reads by default) is preprocessed and sharded by the
   workflow itself, with full-width random models in the real formats (an
   ESM-2 of 2,560 and a DNABERT-S of 768 values, one layer each: the files the
   tail reads have the production widths, 3,328 features per frame);
2. each shard's embedding files are written with random vectors and the
   engine's attributes (the embedding itself is what ``workflow_gpu.py``
   measures on a GPU);
3. the tail (``--forcerun nan_gate``: the gate and everything after it) runs,
   after the embedding files are read once (a run's embedding job has just
   written them: they are in the page cache), ``--repeats`` times for each workflow of ``--workflow`` (checkouts, e.g.
   before and after a change), interleaved, in the same working directory, with
   ``--cores`` cores.

Reports per workflow the median wall time of the tail's Snakemake run and the
median seconds of each rule (``benchmark:`` files), and writes
``<out>/workflow_tail_cpu.json`` and ``.md``.

    python benchmarks/workflow_tail.py --workflow /tmp/before . --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.workflow_gpu import read_set  # noqa: E402
from virnucflow.engine import read_ahead  # noqa: E402

MODELS = ("dnabert_s", "esm2")
TAIL = ["nan_gate", "merge", "predict", "windows", "report_sample", "report_run", "export_merged_pt"]


def build_models(work: Path) -> dict:
    """One-layer models of the production widths, in the real formats."""
    from virnucflow.demo import (random_classifier, random_dnabert, random_esm2, save_dnabert_dir, save_fair_esm,
                                 save_original_classifier, train_dna_tokenizer)
    from virnucflow.models.dnabert_s import DNABERTConfig
    from virnucflow.models.esm2 import ESM2Config

    paths = {"esm2": work / "esm2_t1_2560.pt", "dnabert_s": work / "dnabert_s_t1_768", "classifier": work / "clf.pth"}
    if not paths["classifier"].exists():
        work.mkdir(parents=True, exist_ok=True)
        save_fair_esm(random_esm2(ESM2Config(num_layers=1, embed_dim=2560, attention_heads=40), 5).half(), paths["esm2"])
        rng = np.random.default_rng(0)
        tok = train_dna_tokenizer(["".join(rng.choice(list("ACGT"), 5000)) for _ in range(100)], vocab_size=4096)
        cfg = DNABERTConfig(vocab_size=4096, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                            intermediate_size=3072)
        save_dnabert_dir(random_dnabert(cfg, 6), paths["dnabert_s"], tok)
        save_original_classifier(random_classifier(768 + 2560, 512, 0), paths["classifier"])
    return {k: str(v) for k, v in paths.items()}


def fake_embeddings(work: Path, sample: str) -> int:
    """Random vectors with the engine's attributes for every shard of ``sample``; returns the frames."""
    import pandas as pd

    from virnucflow.engine import NONFINITE_COLUMNS, EmbedStats
    from virnucflow.features import Embeddings, write_h5
    from virnucflow.shard import read_shard
    from virnucflow.tables import write_tsv

    res = work / "results" / sample
    rng = np.random.default_rng(0)
    frames = 0
    for shard in sorted((res / "shards").glob("*.tsv")):
        index, ids, nts, aas = read_shard(shard)
        frames += len(ids)
        for model in MODELS:
            entry = json.loads((work / "results" / "models" / f"{model}.json").read_text())[model]
            tokens = sum(map(len, nts if model == "dnabert_s" else aas))
            stats = EmbedStats(sequences=len(ids), unique_sequences=len(ids), tokens=tokens, tokens_if_no_dedup=tokens)
            attrs = {"model_kind": model, "model_spec": entry["spec"], "model_path": entry["path"],
                     "model_description": entry["description"], "model_config": entry.get("config", {}),
                     "demo_model": False, "precision": "fp16", "precision_requested": "fp16", "attention": "fake",
                     "packing": True, "device": "none (workflow_tail.py: random vectors)", "pooling": "mean",
                     "stats": {**asdict(stats), "dedup_saving": 0.0}, "recomputed_fp32": 0}
            vectors = rng.standard_normal((len(ids), entry["dim"]), dtype=np.float32)
            write_h5(res / "embeddings" / model / f"{shard.stem}.h5", Embeddings(ids, index, vectors, attrs))
            write_tsv(res / "qc" / "nonfinite" / model / f"{shard.stem}.tsv", pd.DataFrame(columns=NONFINITE_COLUMNS))
    return frames


def snakemake(workflow: Path, work: Path, cores: int, *extra: str) -> float:
    # targets first: --forcerun, --config, --configfile and --rerun-triggers each take all the words after them
    cmd = [sys.executable, "-m", "snakemake", *extra, "-s", str(workflow / "Snakefile"), "-d", str(work), "--cores",
           str(cores), "--rerun-triggers", "mtime", "--configfile", str(work / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": f"{workflow}:{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-5000:])
        raise SystemExit(f"snakemake failed: {' '.join(cmd)}")
    return wall


def rule_seconds(work: Path) -> dict[str, float]:
    from virnucflow.report import rule_times

    table = rule_times(work / "logs" / "benchmarks")
    return {r.rule: float(r.wall_s) for r in table.itertuples() if r.rule in TAIL}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reads", type=int, default=200_000)
    p.add_argument("--workflow", nargs="+", default=[str(REPO)], help="checkouts whose Snakefile runs the tail")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--config", nargs="*", default=[], help="extra --config KEY=VALUE for every run")
    p.add_argument("--workdir", default="/tmp/virnucflow_tail_bench")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()

    work = Path(args.workdir) / f"reads_{args.reads}"
    models = build_models(Path(args.workdir) / "models")
    if not (work / "results" / "reads" / "shards").is_dir():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        read_set(work / "reads.fa", args.reads, seed=args.reads)
        (work / "samples.tsv").write_text(f"sample\tfasta\nreads\t{work / 'reads.fa'}\n")
        (work / "config.yaml").write_text(json.dumps({
            "samples": str(work / "samples.tsv"), "chunk_length": 500,
            "models": {**models, "download": False, "classifier_chunk_length": 500}}))
        workflow = Path(args.workflow[-1]).resolve()
        snakemake(workflow, work, args.cores, *[f"results/models/{m}.json" for m in ("esm2", "dnabert_s", "classifier")])
        snakemake(workflow, work, args.cores, "--until", "shard")
    frames = fake_embeddings(work, "reads")
    extra = ["--forcerun", "nan_gate"] + (["--config", *args.config] if args.config else [])
    runs: dict[str, list[dict]] = {w: [] for w in args.workflow}
    for _ in range(args.repeats):
        for w in args.workflow:
            for rule in TAIL:  # the last run's benchmark files: a rule this workflow does not run must not show
                for f in (work / "logs" / "benchmarks").rglob(f"{rule}.tsv"):
                    f.unlink()
            # In a run the embedding job has just written these: in the page cache, as the previous run's
            # outputs (features.h5) would otherwise be and they not.
            read_ahead(sorted((work / "results").glob("*/embeddings/*/*.h5")))
            wall = snakemake(Path(w).resolve(), work, args.cores, *extra)
            runs[w].append({"wall_s": wall, "rules": rule_seconds(work)})
            print(f"{w}: tail {wall:.1f} s {runs[w][-1]['rules']}", flush=True)

    def commit(w: str) -> str:
        out = subprocess.run(["git", "-C", w, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", w, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")

    summary = []
    for w, rs in runs.items():
        rules = sorted({r for run in rs for r in run["rules"]})
        summary.append({"workflow": w, "commit": commit(w), "median_wall_s": round(statistics.median(r["wall_s"] for r in rs), 2),
                        "walls_s": [round(r["wall_s"], 2) for r in rs],
                        "median_rule_s": {r: round(statistics.median(run["rules"].get(r, 0.0) for run in rs), 2) for r in rules}})
    row = {"reads": args.reads, "frames": frames, "cores": args.cores, "repeats": args.repeats, "config": args.config,
           "cpu": _cpu(), "runs": summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "workflow_tail_cpu.json").write_text(json.dumps(row, indent=1) + "\n")
    (out / "workflow_tail_cpu.md").write_text(table(row))
    print(table(row))


def _cpu() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def table(row: dict) -> str:
    rules = sorted({r for s in row["runs"] for r in s["median_rule_s"]}, key=TAIL.index)
    lines = [f"# The steps after the embedding, on the CPU ({row['cpu']})", "",
             f"`benchmarks/workflow_tail.py`: {row['reads']:,} reads ({row['frames']:,} frames, 3,328 features each), "
             f"the gate and everything after it (`--forcerun nan_gate`) with `--cores {row['cores']}`, "
             f"{row['repeats']} runs per workflow, interleaved; medians. Embedding files: random vectors.", "",
             "| workflow | commit | tail wall s (median) | runs | " + " | ".join(rules) + " |",
             "|---|---|---|---|" + "---|" * len(rules)]
    for s in row["runs"]:
        cells = " | ".join(f"{s['median_rule_s'][r]:.2f}" if r in s["median_rule_s"] else "-" for r in rules)
        lines.append(f"| {s['workflow']} | {s['commit']} | {s['median_wall_s']:.1f} | {', '.join(f'{w:.1f}' for w in s['walls_s'])} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
