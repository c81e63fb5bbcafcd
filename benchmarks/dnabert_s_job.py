"""One DNABERT-S embedding job (engine.embed_shard) per process: start-up and compute, FlexAttention against
packed SDPA, full-size random weights (DNABERT-S 117 M parameters, 4,096-token BPE), random 498 bp windows.

    python benchmarks/dnabert_s_job.py setup 60000      # model, manifest and a shard of 60,000 frames in /tmp/dj
    python benchmarks/dnabert_s_job.py flex             # one job; prints the engine's summary line
    python benchmarks/dnabert_s_job.py sdpa
    python benchmarks/dnabert_s_job.py triton
    python benchmarks/dnabert_s_job.py compare flex sdpa triton   # pooled cosine of each against the first

Run on 2026-12-02 on an H200: results/dnabert_s_job_H200.md (the command line is there).
"""
import json, os, subprocess, sys, time
from pathlib import Path
W = Path("/tmp/dj"); W.mkdir(exist_ok=True)
if sys.argv[1] == "setup":
    import numpy as np
    from virnucflow.steps.demo import random_dnabert, save_dnabert_dir, train_dna_tokenizer
    from virnucflow.models.dnabert_s import DNABERTConfig
    from virnucflow.models.manifest import check_model
    from virnucflow.steps.shard import SHARD_HEADER
    rng = np.random.default_rng(0)
    tok = train_dna_tokenizer(["".join(rng.choice(list("ACGT"), 5000)) for _ in range(200)], vocab_size=4096)
    save_dnabert_dir(random_dnabert(DNABERTConfig(), 1), W / "dn", tok)
    check_model("dnabert_s", str(W / "dn"), W / "m.json", allow_download=False)
    n = int(sys.argv[2])
    with open(W / "shard.tsv", "w") as f:
        f.write(SHARD_HEADER)
        for i in range(n):
            f.write(f"{i}\tr{i}_chunk_1F1\t{''.join(rng.choice(list('ACGT'), 498))}\tM\n")
    sys.exit()
if sys.argv[1] == "compare":
    import numpy as np
    from virnucflow.io.features import read_h5
    first = read_h5(W / f"{sys.argv[2]}.h5").vectors.astype(np.float64)
    for other in sys.argv[3:]:
        b = read_h5(W / f"{other}.h5").vectors.astype(np.float64)
        cos = (first * b).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(b, axis=1)
        print(f"{sys.argv[2]} vs {other}: pooled cosine min {cos.min():.8f}, max abs diff {np.abs(first - b).max():.4f}")
    sys.exit()
from virnucflow.engine import EmbedOptions
from virnucflow.steps.embed import embed_shard
import logging; logging.basicConfig(level=logging.INFO, format="%(message)s")
t = time.perf_counter()
st = embed_shard("dnabert_s", W / "m.json", W / "shard.tsv", W / f"{sys.argv[1]}.h5", EmbedOptions.defaults(attention=sys.argv[1], device="cuda"))
print(f"{sys.argv[1]}: embed_shard {time.perf_counter() - t:.1f} s")
