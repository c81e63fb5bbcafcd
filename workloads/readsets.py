"""Synthetic read sets for the workflow benchmarks.

- ``lambda``: reads of 300-1,200 bp, half fragments of the lambda phage genome
  (either strand: many windows repeat, so the embedding's deduplication saves
  much), half host-like random DNA;
- ``unique``: the same lengths, half random coding sequence of sense codons on
  either strand (frames without stop codons, no two alike), half host-like
  random DNA: no duplicate frames, what a real metagenome is closer to.

``--length L`` gives reads of exactly L bp instead (e.g. 150 for short reads).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIRNUCFLOW_SHARED", REPO.parent / "shared"))
LAMBDA = SHARED / "demo" / "lambda_phage_NC_001416.fasta.gz"
_COMP = str.maketrans("ACGT", "TGCA")


def write_reads(path: Path, n: int, seed: int, kind: str = "lambda", length: int | None = None,
                start: int = 0) -> None:
    """``n`` reads (IDs from ``start``) of ``kind`` (``lambda`` or ``unique``) into a FASTA file."""
    from virnucflow.steps.preprocess import CODON_TABLE

    rng = np.random.default_rng(seed)
    sense = np.array([c for c, a in CODON_TABLE.items() if a != "*"])
    bases = np.array(list("ACGT"))
    genome = ("".join(line.strip() for line in gzip.open(LAMBDA, "rt") if not line.startswith(">"))
              if kind == "lambda" else "")
    with open(path, "w") as out:
        for i in range(start, start + n):
            size = length or int(rng.integers(300, 1201))
            if i % 2 == 0:
                if kind == "lambda":
                    begin = int(rng.integers(0, len(genome) - size))
                    seq = genome[begin:begin + size]
                else:
                    seq = "".join(rng.choice(sense, size // 3 + 1))[:size]
                if rng.random() < 0.5:
                    seq = seq.translate(_COMP)[::-1]
                name = f"{'phage' if kind == 'lambda' else 'coding'}_{i}"
            else:
                seq = "".join(rng.choice(bases, size))
                name = f"host_{i}"
            out.write(f">{name}\n{seq}\n")
