"""The whole workflow on one GPU: wall time, NVML utilisation over the run, time per rule.

Full-size random-weight models in the real formats (ESM-2 3B fair-esm file,
DNABERT-S Hugging Face directory, a VirNucPro-format classifier; built once,
as ``fp32_compare_gpu.py`` builds them) and synthetic read sets of mixed
lengths (300-1,200 bp): half fragments of the lambda phage genome
(``../shared/demo``, both strands), half host-like random DNA (GC 50%), or
(``--readset unique``) half random coding sequence instead of lambda: no
duplicate frames; ``--samples K`` splits the reads into a plate of K samples. Each
run is ``snakemake --cores 16 --resources gpu=1`` in a fresh working
directory, with the workflow of ``--workflow`` (another checkout, for a
before/after comparison) and its default config unless ``--config`` adds
keys. NVML utilisation is sampled every 50 ms from the start of Snakemake to
its end (``--compile-cache DIR`` shares one compile cache between the runs, as
a project's later runs share theirs; by default each run's is new, so cold).
The original VirNucPro's time for the same work is projected from the
tokens embedded and the original's measured tokens/s (``--original-esm2``,
``--original-dnabert``: ``embed_throughput.py``'s "original" rows).

    python benchmarks/workflow_gpu.py --reads 20000,200000 --label after
    python benchmarks/workflow_gpu.py --reads 20000 --label before --workflow /path/to/old/checkout
    python benchmarks/workflow_gpu.py --table benchmarks/results/workflow_*.json   # the table of all runs

Writes ``<out>/workflow_<gpu>_<label>_<reads>.json`` per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def read_set(path: Path, n: int, seed: int, kind: str = "lambda") -> None:
    """``n`` reads of 300-1,200 bp (:func:`workloads.readsets.write_reads`)."""
    from workloads.readsets import write_reads

    write_reads(path, n, seed, kind)


def rule_times(work: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs and summed wall seconds, from the ``benchmark:`` files (the report's reader)."""
    from virnucflow.steps.report import rule_times as report_rule_times

    table = report_rule_times(work / "logs" / "benchmarks")
    return {r.rule: {"jobs": int(r.jobs), "seconds": float(r.wall_s)} for r in table.itertuples()}


def embedded_tokens(work: Path) -> dict[str, int]:
    """Tokens each model would run without deduplication (the original has none), summed over
    shards, from the shards' score summaries (older checkouts: the embedding files)."""
    from virnucflow.steps import report

    infos = sorted((work / "results" / "batches").glob("*/embed/*.json"))
    if infos:
        jobs = report.embedding_jobs(infos, work / "logs" / "benchmarks")
        return {m: int(t) for m, t in jobs.groupby("model")["tokens_if_no_dedup"].sum().items()}
    import h5py  # a checkout before the score step: the statistics are in the embedding files

    tokens: dict[str, int] = {}
    for path in sorted((work / "results").glob("*/embeddings/*/*.h5")):
        with h5py.File(path) as h5:
            stats = json.loads(h5.attrs.get("stats", "{}"))
        tokens[path.parent.name] = tokens.get(path.parent.name, 0) + int(stats.get("tokens_if_no_dedup", 0))
    return tokens


def embedding_jobs(work: Path) -> int:
    new = list((work / "logs" / "benchmarks" / "batches").glob("*/embed/*.tsv"))
    return len(new) if new else len(list((work / "logs" / "benchmarks").glob("*/embed/*.tsv")))


def run_one(args, models: dict, reads: int) -> dict:
    import contextlib

    import torch

    work = Path(args.workdir) / f"{args.label}_{args.readset}_{args.samples}x_{reads}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    read_set(work / "reads.fa", reads, seed=reads, kind=args.readset)
    names = [f"s{k + 1:03d}" for k in range(args.samples)] if args.samples > 1 else ["reads"]
    lines = open(work / "reads.fa").read().splitlines(keepends=True)
    per = -(-len(lines) // 2 // len(names))  # reads per sample, in order: a plate of the same reads
    for k, name in enumerate(names):
        (work / f"{name}.fa").write_text("".join(lines[2 * per * k:2 * per * (k + 1)]))
    (work / "samples.tsv").write_text("sample\tfasta\n" + "".join(f"{n}\t{work / (n + '.fa')}\n" for n in names))
    config = {"samples": str(work / "samples.tsv"), "chunk_length": 500,
              "models": {**models, "download": False, "classifier_chunk_length": 500}}
    for key, value in json.loads(args.extra_config).items():  # nested keys, which --config cannot pass
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    if args.compile_cache:  # shared by the runs: warm after the first (a project's later runs)
        config["compile_cache"] = str(Path(args.compile_cache).resolve())
    (work / "config.yaml").write_text(json.dumps(config))
    workflow = Path(args.workflow).resolve()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workflow / "Snakefile"), "-d", str(work), "--configfile",
           str(work / "config.yaml"), "--cores", "16", "--resources", "gpu=1"]
    if args.config:
        cmd += ["--config", *args.config]
    env = {**os.environ, "PYTHONPATH": f"{workflow}:{os.environ.get('PYTHONPATH', '')}"}
    if torch.cuda.is_available():
        from benchmarks.gpu_util import UtilizationSampler

        sampling = UtilizationSampler()
    else:
        sampling = contextlib.nullcontext()
    with sampling as sampler:
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        t1 = time.monotonic()
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-5000:])
        raise SystemExit(f"snakemake failed for {args.label} {reads}")
    util = sampler.mean(t0, t1) if sampler is not None else float("nan")
    timeline = sampler.per_second(t0, t1) if sampler is not None else []
    frames = sum(1 for n in names for line in open(work / "results" / n / "preprocess" / "identified_protein.faa")
                 if line.startswith(">"))
    tokens = embedded_tokens(work)
    original_s = tokens.get("esm2", 0) / args.original_esm2 + tokens.get("dnabert_s", 0) / args.original_dnabert
    wall = t1 - t0
    row = dict(label=args.label, readset=args.readset, samples=len(names), gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", reads=reads, frames=frames, tokens=tokens,
               wall_s=round(wall, 1), gpu_util_mean=round(util, 3), wall_s_per_100k_reads=round(wall * 1e5 / reads, 1),
               original_projected_s=round(original_s, 1), speedup_vs_original=round(original_s / wall, 2),
               config=args.config, extra_config=json.loads(args.extra_config), compile_cache=config.get("compile_cache", "cold (in the run's working directory)"),
               workflow=str(workflow), rules=rule_times(work),
               util_per_second=timeline,
               embedding_shards=embedding_jobs(work))
    print(json.dumps(row, indent=1), flush=True)
    return row


def table(paths: list[str]) -> str:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    rows.sort(key=lambda r: (r["reads"], r["label"]))
    lines = [f"# The whole workflow on one GPU ({rows[0]['gpu'] if rows else ''})", "",
             "`benchmarks/workflow_gpu.py`: full-size random-weight models in the real formats, synthetic reads of "
             "300-1,200 bp (half lambda fragments, half host-like), `snakemake --cores 16 --resources gpu=1`, "
             "NVML utilisation sampled every 50 ms over the whole Snakemake run. Original: projected from the tokens "
             "embedded at the original's measured tokens/s.", "",
             "| run | read set | samples | reads | frames | embedding jobs | wall s | GPU util | s per 100k reads | original (projected) s | x original |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r.get('readset', 'lambda')} | {r.get('samples', 1)} | {r['reads']:,} | {r['frames']:,} | {r['embedding_shards']} | {r['wall_s']} | "
                     f"{100 * r['gpu_util_mean']:.0f}% | {r['wall_s_per_100k_reads']} | {r['original_projected_s']:,} | "
                     f"{r['speedup_vs_original']} |")
    lines += ["", "Per rule (jobs, summed seconds) from the `benchmark:` files:", ""]
    for r in rows:
        rules = ", ".join(f"{k} {v['jobs']}x {v['seconds']:.1f} s"
                          for k, v in sorted(r["rules"].items(), key=lambda kv: -kv[1]["seconds"]))
        lines.append(f"- {r['label']} {r['reads']:,}: {rules}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reads", default="20000,200000")
    p.add_argument("--label", default="after")
    p.add_argument("--readset", choices=["lambda", "unique"], default="lambda",
                   help="lambda: half lambda fragments (many duplicate frames); unique: no duplicate frames")
    p.add_argument("--samples", type=int, default=1, help="split the reads into this many samples (a plate)")
    p.add_argument("--workflow", default=str(REPO), help="checkout whose Snakefile runs (default: this one)")
    p.add_argument("--config", nargs="*", default=[], help="extra --config KEY=VALUE for snakemake")
    p.add_argument("--extra-config", default="{}", help="JSON merged into the run's config file, e.g. "
                   "'{\"embedding\": {\"dnabert_s\": {\"attention\": \"sdpa\"}}}'")
    p.add_argument("--workdir", default="/tmp/virnucflow_workflow_bench")
    p.add_argument("--compile-cache", help="compile_cache for every run (default: the config's, in each run's fresh "
                   "working directory, so cold)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--original-esm2", type=float, default=6101.0, help="original VirNucPro ESM-2 tokens/s (H200)")
    p.add_argument("--original-dnabert", type=float, default=12933.0, help="original DNABERT-S tokens/s (H100)")
    p.add_argument("--table", nargs="*", help="print the table of these result files and exit")
    p.add_argument("--tiny", action="store_true", help="small models: a smoke test of this script (CPU ok)")
    args = p.parse_args()
    if args.table is not None:
        print(table(args.table))
        return
    from benchmarks.fp32_compare_gpu import build_models

    import torch

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    models = build_models(Path(args.workdir) / ("tiny" if args.tiny else "full"), args.tiny)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    gpu = next((k for k in ("H200", "H100", "A100", "L40S") if k in name), name.replace(" ", "_"))
    for n in map(int, args.reads.split(",")):
        row = run_one(args, models, n)
        (out / f"workflow_{gpu}_{args.label}_{args.readset}_{args.samples}x_{n}.json").write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
