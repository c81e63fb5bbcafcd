"""`snakemake fp32_compare` on full-size random-weight models in the real file formats, on a GPU.

Writes the models (ESM-2 3B as a fair-esm FP16 checkpoint, DNABERT-S as a Hugging Face
directory, a VirNucPro-shaped classifier), a FASTA of synthetic coding sequences of mixed
lengths (every window has at least one stop-free frame) plus the lambda phage contigs, then
runs `snakemake fp32_compare` and records its wall time, summary and call agreement under
benchmarks/results/ (fp32_compare_<GPU>.md).

    python benchmarks/fp32_compare_gpu.py --workdir /tmp/fc --per-stratum 400
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virnucflow.steps.demo import (  # noqa: E402
    random_classifier, random_dnabert, random_esm2, save_dnabert_dir, save_fair_esm, save_original_classifier,
    train_dna_tokenizer,
)
from virnucflow.models.dnabert_s import DNABERTSConfig  # noqa: E402
from workloads.published import KNOWN_CONFIGS  # noqa: E402
from virnucflow.steps.preprocess import CODON_TABLE  # noqa: E402

SENSE = [c for c, aa in CODON_TABLE.items() if aa != "*"]


def coding_fasta(path: Path, n: int, seed: int) -> None:
    """``n`` sequences of 60-1,500 bp made of sense codons (frame 1 is stop-free in every window)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            length = int(rng.choice([rng.integers(60, 150), rng.integers(150, 600), rng.integers(600, 1500)]))
            seq = "".join(rng.choice(SENSE, length // 3))
            f.write(f">cds{i}\n{seq}\n")
        f.write((REPO / "resources" / "demo" / "lambda_contigs.fa").read_text())


def build_models(work: Path, tiny: bool = False) -> dict:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paths = {"esm2": work / "esm2_t36_3B_random.pt", "dnabert_s": work / "dnabert_s_random", "classifier": work / "clf.pth"}
    if not paths["esm2"].exists():
        with torch.device(dev):
            m = random_esm2(KNOWN_CONFIGS["esm2_t6_8M_UR50D" if tiny else "esm2_t36_3B_UR50D"], 5).half()  # as published: FP16
        save_fair_esm(m.cpu(), paths["esm2"])
        del m
        torch.cuda.empty_cache()
    if not paths["dnabert_s"].exists():
        rng = np.random.default_rng(0)
        tok = train_dna_tokenizer(["".join(rng.choice(list("ACGT"), 5000)) for _ in range(400)], vocab_size=4096)
        size = dict(hidden_size=96, num_hidden_layers=2, intermediate_size=192) if tiny else {}
        save_dnabert_dir(random_dnabert(DNABERTSConfig(vocab_size=tok.get_vocab_size(), **size), 6), paths["dnabert_s"], tok)
    if not paths["classifier"].exists():
        width = 96 + 320 if tiny else 768 + 2560
        save_original_classifier(random_classifier(width, 512, 0), paths["classifier"])
    return {k: str(v) for k, v in paths.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/virnucflow_fp32_compare")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--sequences", type=int, default=1500)
    p.add_argument("--per-stratum", type=int, default=400)
    p.add_argument("--cores", type=int, default=8)
    p.add_argument("--esm2-precision", default="fp16", help="embedding.esm2.precision of the production path (e.g. fp8)")
    p.add_argument("--tiny", action="store_true", help="small models: a smoke test of this script (CPU ok)")
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    models = build_models(work, args.tiny)
    coding_fasta(work / "reads.fa", args.sequences, seed=1)
    (work / "samples.tsv").write_text(f"sample\tfasta\nmixed\t{work / 'reads.fa'}\n")
    (work / "config.yaml").write_text(json.dumps({
        "samples": str(work / "samples.tsv"), "chunk_length": 500,
        "models": {**models, "download": False, "classifier_chunk_length": 500}, "fp32_compare": {"per_stratum": args.per_stratum},
        "embedding": {"esm2": {"precision": args.esm2_precision}}}))
    print(f"models and input ready in {time.monotonic() - t0:.0f} s", flush=True)
    cmd = [sys.executable, "-m", "snakemake", "fp32_compare", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", str(args.cores), "--resources", "gpu=1"]
    t1 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t1
    sys.stdout.write(res.stderr[-4000:])
    qc = work / "results" / "mixed" / "qc" / "fp32_compare"
    log = (work / "logs" / "mixed" / "fp32_compare.log").read_text() if (work / "logs" / "mixed" / "fp32_compare.log").exists() else ""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    bench = work / "logs" / "benchmarks" / "mixed" / "fp32_compare_sample.tsv"
    lines = [f"# snakemake fp32_compare, {gpu}", "",
             f"Full-size random-weight models in the real formats (ESM-2 3B fair-esm FP16 file, DNABERT-S HF directory), "
             f"{args.sequences} synthetic coding sequences of 60-1,500 bp plus the lambda contigs, per_stratum {args.per_stratum}, "
             f"ESM-2 in {args.esm2_precision}, torch {torch.__version__}. `snakemake fp32_compare` exit status {res.returncode}, wall time {wall:.0f} s "
             f"(the whole snakemake call: preprocessing, model check, the comparison job).", ""]
    if bench.exists():
        lines += ["Rule benchmark (`logs/benchmarks/mixed/fp32_compare_sample.tsv`):", "", "```", bench.read_text().strip(), "```", ""]
    for name in ("summary.tsv", "call_agreement.tsv"):
        if (qc / name).exists():
            lines += [f"`{name}`:", "", "```", (qc / name).read_text().strip(), "```", ""]
    lines += ["Job log (tail):", "", "```", *log.strip().splitlines()[-16:], "```"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.esm2_precision == "fp16" else f"_esm2_{args.esm2_precision}"
    stem = out / f"fp32_compare_{gpu.replace(' ', '_')}{suffix}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    for name in ("cosine.png", "scores.png"):
        if (qc / name).exists():
            (out / f"{stem.name}_{name}").write_bytes((qc / name).read_bytes())
    print("\n".join(lines))
    sys.exit(res.returncode)


if __name__ == "__main__":
    main()
