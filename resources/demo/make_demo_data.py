"""Regenerate the bundled demo dataset (deterministic; run from the repository root).

- lambda_contigs.fa: Enterobacteria phage lambda (NCBI RefSeq NC_001416.1, from
  ../shared/demo) cut into 15 pieces of 150-7000 bp (the whole genome), one of them reverse
  complemented, with the coordinates in each header;
- synthetic_controls.fa.gz: 10 synthetic "host-like" sequences (random
  intergenic DNA at 50.8 % GC with planted open reading frames of random
  sense codons). They are not from any organism; they are there so that the
  demo has non-viral-looking inputs with frames to score.
"""

import gzip
from pathlib import Path

import numpy as np

SHARED = Path("../shared/demo/lambda_phage_NC_001416.fasta.gz")
OUT = Path("resources/demo")
CUTS = [3000, 450, 5000, 300, 6000, 150, 2500, 4100, 900, 5200, 3333, 250, 6000, 7000, 5000]
STOPS = {"TAA", "TAG", "TGA"}
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def wrap(seq: str, width: int = 70) -> str:
    return "\n".join(seq[i : i + width] for i in range(0, len(seq), width))


def main() -> None:
    lines = gzip.open(SHARED, "rt").read().splitlines()
    genome = "".join(line.strip() for line in lines[1:])
    records, start = [], 0
    for k, length in enumerate(CUTS, start=1):
        piece = genome[start : start + length]
        end = start + len(piece)
        if k == 5:
            piece = piece.translate(COMPLEMENT)[::-1]
            header = f"lambda_{k:02d} NC_001416.1:c{end}-{start + 1} (reverse complement)"
        else:
            header = f"lambda_{k:02d} NC_001416.1:{start + 1}-{end}"
        records.append(f">{header}\n{wrap(piece)}\n")
        start = end
        if start >= len(genome):
            break
    (OUT / "lambda_contigs.fa").write_text("".join(records))

    rng = np.random.default_rng(20261121)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
    gc = [0.246, 0.254, 0.254, 0.246]  # A, C, G, T at 50.8 % GC
    out = []
    for k in range(1, 11):
        parts, total, target = [], 0, int(rng.integers(300, 3000))
        while total < target:
            inter = "".join(rng.choice(list("ACGT"), int(rng.integers(20, 200)), p=gc))
            orf = "ATG" + "".join(rng.choice(sense, int(rng.integers(80, 400)))) + "TAA"
            if rng.random() < 0.4:
                orf = orf.translate(COMPLEMENT)[::-1]
            parts += [inter, orf]
            total += len(inter) + len(orf)
        seq = "".join(parts)[:target]
        out.append(f">control_{k:02d} synthetic host-like sequence, {len(seq)} bp\n{wrap(seq)}\n")
    with gzip.GzipFile(OUT / "synthetic_controls.fa.gz", "wb", mtime=0) as f:
        f.write("".join(out).encode())


if __name__ == "__main__":
    main()
