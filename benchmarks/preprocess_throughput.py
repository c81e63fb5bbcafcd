"""Preprocessing throughput: VirNucFlow's preprocess on a >= 1 GB FASTA, beside the original.

Generates (once, deterministically) a FASTA of short sequences like a
metagenome read set: lengths 150-600 bp, ~40% carrying an open reading frame
of random sense codons on either strand, the rest random DNA; wrapped at 80
columns. Then times ``virnucflow preprocess`` on all of it in a child process
(wall time, records/s, windows/s, MB/s, peak resident memory) and, when given
a checkout of the original VirNucPro (``--original PATH``; its ``units.py`` is
imported from there, never copied), the original's ``split_fasta_chunk`` and
``identify_seq`` loop on the first ``--original-records`` records of the same
file, checking that both produce identical files on that prefix.

Writes ``<out>/preprocess_throughput_<date>.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STOPS = {"TAA", "TAG", "TGA"}
COMP = str.maketrans("ACGT", "TGCA")


def generate(path: Path, target_bytes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sense = np.array([a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS])
    bases = np.array(list("ACGT"))
    written, k = 0, 0
    with open(path, "w") as f:
        while written < target_bytes:
            lengths = rng.integers(150, 601, 10000)
            coding = rng.random(10000) < 0.4
            out = []
            for length, orf in zip(lengths, coding):
                if orf:
                    seq = "".join(rng.choice(sense, length // 3 + 1))[rng.integers(0, 3):][:length]
                    if rng.random() < 0.5:
                        seq = seq.translate(COMP)[::-1]
                else:
                    seq = "".join(rng.choice(bases, length))
                k += 1
                out.append(f">read_{k} synthetic\n" + "\n".join(seq[i : i + 80] for i in range(0, len(seq), 80)) + "\n")
            block = "".join(out)
            f.write(block)
            written += len(block)


def run_ours(fasta: Path, length: int, work: Path) -> dict:
    outs = [work / "ours.chunked.fa", work / "ours.nt.fa", work / "ours.aa.faa", work / "ours.records.tsv"]
    code = (
        "import sys, time, json, resource\n"
        "from virnucflow.steps.preprocess import preprocess\n"
        "t = time.perf_counter()\n"
        f"s = preprocess({str(fasta)!r}, {length}, *{[str(p) for p in outs]!r})\n"
        "dt = time.perf_counter() - t\n"
        "print(json.dumps(dict(records=s.records, bases=s.bases, chunks=s.chunks, frames=s.frames, seconds=dt,\n"
        "      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_original(original: Path, fasta: Path, length: int, n_records: int, work: Path) -> dict:
    """The original's preprocessing (its own functions, imported from a checkout) on a prefix."""
    prefix = work / "prefix.fa"
    with open(fasta) as src, open(prefix, "w") as dst:
        seen = 0
        for line in src:
            if line.startswith(">"):
                seen += 1
                if seen > n_records:
                    break
            dst.write(line)
    code = (
        "import sys, time, json, resource\n"
        f"sys.path.insert(0, {str(original)!r})\n"
        "from units import split_fasta_chunk, identify_seq\n"
        "from Bio import SeqIO\n"
        "t = time.perf_counter()\n"
        f"split_fasta_chunk({str(prefix)!r}, {str(work / 'orig.chunked.fa')!r}, {length})\n"
        "n = 0\n"
        f"with open({str(work / 'orig.nt.fa')!r}, 'w') as d, open({str(work / 'orig.aa.faa')!r}, 'w') as p:\n"
        f"    for r in SeqIO.parse({str(work / 'orig.chunked.fa')!r}, 'fasta'):\n"
        "        for item in identify_seq(r.id, str(r.seq).upper()):\n"
        "            if item.get('protein', '') != '':\n"
        "                d.write('>' + item['seqid'] + '\\n' + item['nucleotide'] + '\\n')\n"
        "                p.write('>' + item['seqid'] + '\\n' + item['protein'] + '\\n')\n"
        "dt = time.perf_counter() - t\n"
        f"print(json.dumps(dict(records={n_records}, seconds=dt,\n"
        "      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # ours on the same prefix must write the same bytes
    from virnucflow.steps.preprocess import preprocess

    preprocess(prefix, length, work / "p.c.fa", work / "p.n.fa", work / "p.a.faa")
    out["identical_outputs"] = all(
        (work / a).read_bytes() == (work / b).read_bytes()
        for a, b in (("p.c.fa", "orig.chunked.fa"), ("p.n.fa", "orig.nt.fa"), ("p.a.faa", "orig.aa.faa"))
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=1.05)
    p.add_argument("--chunk-length", type=int, default=500)
    p.add_argument("--work", default="/tmp/virnucflow_preprocess_bench")
    p.add_argument("--original", help="checkout of Li-Jing-1997/VirNucPro (its units.py is imported)")
    p.add_argument("--original-records", type=int, default=20000)
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    fasta = work / f"reads_{a.size_gb:g}GB.fa"
    if not fasta.exists():
        t = time.perf_counter()
        generate(fasta, int(a.size_gb * 1e9))
        print(f"generated {fasta} ({fasta.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s", flush=True)
    size = fasta.stat().st_size
    rows = []
    ours = run_ours(fasta, a.chunk_length, work)
    rows.append(dict(method="virnucflow preprocess", input_gb=round(size / 1e9, 3), **ours,
                     records_per_s=round(ours["records"] / ours["seconds"]),
                     windows_per_s=round(ours["chunks"] / ours["seconds"]),
                     mb_per_s=round(size / 1e6 / ours["seconds"], 1)))
    print(rows[-1], flush=True)
    if a.original:
        orig = run_original(Path(a.original), fasta, a.chunk_length, a.original_records, work)
        rows.append(dict(method="original VirNucPro (units.py)", **orig,
                         records_per_s=round(orig["records"] / orig["seconds"])))
        print(rows[-1], flush=True)
    meta = dict(date=dt.date.today().isoformat(), python=platform.python_version(), cpu=platform.processor() or platform.machine(),
                cores=os.cpu_count(), chunk_length=a.chunk_length)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"preprocess_throughput_{meta['date']}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Preprocessing throughput ({meta['date']}, {meta['cores']} cores, Python {meta['python']})", "",
             "| method | input | records/s | peak RSS MiB | notes |", "|---|---|---|---|---|"]
    for r in rows:
        notes = ", ".join(f"{k}={v}" for k, v in r.items() if k not in {"method", "records_per_s", "peak_rss_mib"})
        lines.append(f"| {r['method']} | {r.get('input_gb', '')} GB | {r['records_per_s']:,} | {r['peak_rss_mib']:.0f} | {notes} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
