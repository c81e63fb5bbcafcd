"""How each job grows with the sample, on the CPU: the whole workflow at 100,000, 1,000,000, ... reads.

Tiny models in the real formats (the demo's, built by the workflow), ``embedding.device: cpu``, the
default outputs (no embedding files kept, no features.h5, no chunked.fa), one sample of non-redundant
short reads (``workloads/readsets.py`` ``unique``, 150 bp: half random coding sequence, half host-like
DNA), ``snakemake --cores N`` in a fresh working directory per size. Per size it records the wall time
of the run and per read, each rule's summed wall time and peak memory (``max_rss`` from its
``benchmark:`` files), and the bytes left under ``results/`` per frame.

    python benchmarks/scale_cpu.py --reads 100000,1000000 --out benchmarks/results

Writes ``<out>/scale_cpu.json`` and ``<out>/scale_cpu.md`` (the table). A benchmark, not a test.
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


def per_rule(work: Path) -> dict[str, dict[str, float]]:
    import pandas as pd

    from virnucflow.steps.report import benchmark_rule

    root = work / "logs" / "benchmarks"
    out: dict[str, dict[str, float]] = {}
    for f in sorted(root.rglob("*.tsv")):
        t = pd.read_csv(f, sep="\t")
        rule = benchmark_rule(f.relative_to(root).parts)
        row = out.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "max_rss_mb": 0.0})
        row["jobs"] += 1
        row["wall_s"] = round(row["wall_s"] + float(t["s"].iloc[0]), 2)
        rss = pd.to_numeric(t["max_rss"], errors="coerce").iloc[0]
        row["max_rss_mb"] = round(max(row["max_rss_mb"], float(rss) if rss == rss else 0.0), 1)
    return out


def run(reads: int, args) -> dict:
    from workloads.readsets import write_reads

    work = Path(args.workdir) / f"scale_{reads}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "resources").mkdir(parents=True)
    fasta = work / "reads.fa"
    write_reads(fasta, reads, seed=1, kind="unique", length=args.length)
    (work / "samples.tsv").write_text(f"sample\tfasta\nreads\t{fasta}\n")
    (work / "scale.yaml").write_text(json.dumps({
        "samples": "samples.tsv", "shards": "auto", "shard_frames": args.shard_frames,
        "output": {"embeddings": False, "features": False, "merged_pt": False, "chunked": False},
        "embedding": {"device": "cpu", **({"token_budget": args.token_budget} if args.token_budget else {})}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores",
           str(args.cores), "--configfile", str(REPO / "config" / "demo.yaml"), str(work / "scale.yaml")]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"snakemake failed at {reads} reads")
    results = work / "results"
    frames = sum(1 for line in open(results / "reads" / "preprocess" / "identified_protein.faa") if line.startswith(">"))
    size = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
    left = sorted(str(p.relative_to(work)) for p in results.rglob("*.h5"))
    row = {"reads": reads, "read_length": args.length, "frames": frames, "wall_s": round(wall, 1),
           "us_per_read": round(1e6 * wall / reads, 1), "results_bytes": size,
           "results_bytes_per_frame": round(size / max(frames, 1), 1), "embedding_files_left": left,
           "rules": per_rule(work), "cores": args.cores, "shard_frames": args.shard_frames,
           "embedding_shards": len(list((work / "logs" / "benchmarks" / "batches").glob("*/embed/*.tsv")))}
    print(json.dumps(row, indent=1), flush=True)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=True)
    return row


def table(rows: list[dict]) -> str:
    rules = sorted({r for row in rows for r in row["rules"]}, key=lambda r: -max(x["rules"].get(r, {}).get("wall_s", 0) for x in rows))
    lines = ["# How each job grows with the sample (CPU, 2 cores, tiny models in the real formats)", "",
             "`benchmarks/scale_cpu.py`: one sample of non-redundant 150 bp reads, demo models, `embedding.device: cpu`, "
             "default outputs (embedding files removed once scored), `snakemake --cores 2`.", "",
             "| reads | frames | shards | wall s | us per read | results/ bytes per frame | embedding files left |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['reads']:,} | {r['frames']:,} | {r['embedding_shards']} | {r['wall_s']} | {r['us_per_read']} | "
                     f"{r['results_bytes_per_frame']} | {len(r['embedding_files_left'])} |")
    lines += ["", "Per rule: jobs, summed wall seconds, peak memory (max_rss, MB, of its largest job):", "",
              "| rule | " + " | ".join(f"{r['reads']:,} reads" for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for rule in rules:
        cells = []
        for r in rows:
            x = r["rules"].get(rule)
            cells.append(f"{x['jobs']}x {x['wall_s']} s, {x['max_rss_mb']:.0f} MB" if x else "")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reads", default="100000,1000000")
    p.add_argument("--length", type=int, default=150)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--shard-frames", type=int, default=300_000)
    p.add_argument("--token-budget", type=int, help="embedding.token_budget (default: the config's, auto)")
    p.add_argument("--workdir", default="/tmp/virnucflow_scale")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--keep", action="store_true", help="keep each size's working directory")
    args = p.parse_args()
    rows = [run(n, args) for n in map(int, args.reads.split(","))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_cpu.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "scale_cpu.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
