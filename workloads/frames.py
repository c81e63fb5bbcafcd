"""Synthetic workloads shared by the benchmarks and the tests.

- :func:`virnucpro_frames`: what VirNucPro feeds its models for 500 bp (or
  300 bp) windows: random coding DNA windows put through the real
  preprocessing (six frames, stop filter, the original's nucleotide slice),
  i.e. ~166-residue proteins and their ~500-nt windows;
- :func:`mixed_frames`: proteins and nucleotide windows with lengths spread
  over 20-1200 residues (log-normal), to show what padding costs.
"""

from __future__ import annotations

import numpy as np

from virnucflow.steps.preprocess import CODON_TABLE, identify_frames

AMINO_ACIDS = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
SENSE = np.array([c for c, a in CODON_TABLE.items() if a != "*"])
BASES = np.array(list("ACGT"))


def virnucpro_frames(n: int, chunk: int = 500, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (nucleotide, protein) pairs as the preprocessing emits them for ``chunk`` bp windows."""
    rng = np.random.default_rng(seed)
    nts: list[str] = []
    aas: list[str] = []
    while len(nts) < n:
        codons = rng.choice(SENSE, chunk // 3 + 1)
        window = "".join(codons)[rng.integers(0, 3):][:chunk]
        for frame in identify_frames("w", window):
            nts.append(frame.nucleotide)
            aas.append(frame.protein)
    return nts[:n], aas[:n]


def mixed_frames(n: int, seed: int = 0, low: int = 20, high: int = 1200) -> tuple[list[str], list[str]]:
    """``n`` (nucleotide, protein) pairs with protein lengths log-normal in [low, high]."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=np.log(200), sigma=0.8, size=n), low, high).astype(int)
    aas = ["".join(rng.choice(AMINO_ACIDS, k)) for k in lengths]
    nts = ["".join(rng.choice(BASES, 3 * k + 1)) for k in lengths]
    return nts, aas
