"""Reading a large FASTQ.gz: decompression alone and the whole reader, before and after xopen.

    python benchmarks/read_speed.py FILE.fq.gz --before DIR [--reps 3] [--out benchmarks/results/read_speed]

``DIR`` holds the package as it was before (``git archive 43d4e90 virnucflow | tar -x -C DIR``:
Python's ``gzip`` module); each measurement runs in a fresh process, the file is read once first
(page cache warm for all). Rows: decompression only (Python's gzip vs xopen's ISA-L reader on a
thread), and the whole reader (``read_sequences``: records parsed and validated) before and after.
Medians of ``--reps`` runs; the machine's cores and the file are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECOMPRESS = {
    "gzip module": "import gzip\nf = gzip.open(PATH, 'rb')\n",
    "xopen (ISA-L, 1 thread)": "from xopen import xopen\nf = xopen(PATH, 'rb', threads=1, format='gz')\n",
}
LOOP = "n = 0\nwhile b := f.read(1 << 20):\n    n += len(b)\nprint(n)\n"
READER = "from virnucflow.io.reads import read_sequences\nprint(sum(1 for _ in read_sequences(PATH, check_duplicates=False)))\n"


def _time(code: str, path: str, pythonpath: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", f"PATH = {path!r}\n" + code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    return time.perf_counter() - t0, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--before", required=True, help="a folder holding the earlier virnucflow package")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "read_speed"))
    a = p.parse_args()
    size = os.path.getsize(a.file)
    with open(a.file, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    rows = []
    cases = [(f"decompress: {k}", v + LOOP, str(REPO)) for k, v in DECOMPRESS.items()]
    cases += [("reader: before (gzip module)", READER, str(Path(a.before).resolve())),
              ("reader: after (xopen)", READER, str(REPO))]
    for name, code, pythonpath in cases:
        times, result = [], ""
        for _ in range(a.reps):
            dt, result = _time(code, a.file, pythonpath)
            times.append(dt)
        med = statistics.median(times)
        rows.append({"case": name, "median_s": round(med, 2), "runs_s": [round(t, 2) for t in times],
                     "compressed_MB_per_s": round(size / med / 1e6, 1), "result": result})
        print(rows[-1], flush=True)
    meta = {"file": a.file, "bytes": size, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d")}
    Path(a.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    base = {r["case"].split(":")[0]: r["median_s"] for r in rows if "before" in r["case"] or "gzip module" in r["case"]}
    lines = [f"# Reading a {size / 1e9:.2f} GB FASTQ.gz ({meta['date']}, {meta['cores']} cores, Python {meta['python']})",
             "", "Medians of %d runs, each in a fresh process, page cache warm. `result`: bytes decompressed or "
             "records read." % a.reps, "", "| case | median s | runs s | compressed MB/s | speed-up | result |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        kind = r["case"].split(":")[0]
        lines.append(f"| {r['case']} | {r['median_s']} | {', '.join(map(str, r['runs_s']))} | "
                     f"{r['compressed_MB_per_s']} | {base[kind] / r['median_s']:.2f}x | {r['result']} |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
