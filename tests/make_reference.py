"""A ``virnucflow selftest`` reference directory in the original VirNucPro's layout, for given models.

The original's inputs and preprocessing files are copied from the bundled reference (they do not
depend on the models); the embeddings and predictions are computed by paths independent of VirNucFlow's
production path, as the original computes them:

- ESM-2: fair-esm's own model and batch converter, the original's ``extract_esm`` pooling
  (``representations[L][i, 1:min(1024, len) + 1].mean(0)``), FP32, TF32 off;
- DNABERT-S: VirNucFlow's model on the reference path (FP32, padded batches, math attention), the
  authors' pooling (mean over every token, [CLS] and [SEP] included);
- classifier: its weights applied by hand (linear, batch norm with running statistics, ReLU,
  linear, softmax), not through ``MLPClassifier.forward``;
- ``prediction_results.txt`` and ``_highestscore.csv`` written as the original's ``prediction.py``
  writes them.

CPU tests use it with the demo models; on a GPU machine, with full-size random-weight models::

    python -m tests.make_reference --models DIR --out REF --device cuda [--full-size]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from virnucflow.steps.selftest import BUNDLED

CASES = ("test_with_orfs", "test_fixed_500bp")


def _fasta(path: Path) -> tuple[list[str], list[str]]:
    ids, seqs = [], []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            ids.append(line[1:].split()[0])
            seqs.append("")
        elif line:
            seqs[-1] += line.strip()
    return ids, seqs


def esm2_vectors(path: Path, ids: list[str], proteins: list[str], device: str) -> tuple[list[str], list[torch.Tensor]]:
    """fair-esm, as the original's extract_esm: IDs in fair-esm's batch order, one pooled vector each."""
    import esm

    torch.backends.cuda.matmul.allow_tf32 = False
    data = torch.load(path, map_location="cpu", weights_only=False)  # a file these tests wrote
    model, alphabet = esm.pretrained.load_model_and_alphabet_core("esm2_selftest", data, None)
    model = model.float().eval().to(device)
    layer = model.num_layers
    convert = alphabet.get_batch_converter()
    dataset = esm.data.FastaBatchedDataset(ids, proteins)
    out_ids, out = [], []
    with torch.no_grad():
        for batch in dataset.get_batch_indices(4096, extra_toks_per_seq=1):
            labels, strs, toks = convert([dataset[i] for i in batch])
            rep = model(toks.to(device), repr_layers=[layer])["representations"][layer]
            for i, (label, s) in enumerate(zip(labels, strs)):
                out_ids.append(label)
                out.append(rep[i, 1:min(1024, len(s)) + 1].mean(0).float().cpu().clone())
    return out_ids, out


def dnabert_s_vectors(path: Path, nucleotides: list[str], device: str) -> np.ndarray:
    from virnucflow.engine import Embedder, EmbedOptions
    from virnucflow.models.checkpoints import load_dnabert_s

    model, _ = load_dnabert_s(path)
    embedder = Embedder.create(model, EmbedOptions.defaults(device=device).reference())
    return embedder.embed_tokens(model.tokenizer.encode_batch(nucleotides))


def classifier_scores(path: Path, features: np.ndarray) -> np.ndarray:
    from virnucflow.models.classifier import load_classifier

    model, _ = load_classifier(path)  # only for its weights
    w = {k: v.double() for k, v in model.state_dict().items()}
    x = torch.from_numpy(features).double()
    h = x @ w["hidden_layer.weight"].T + w["hidden_layer.bias"]
    h = (h - w["bn1.running_mean"]) / torch.sqrt(w["bn1.running_var"] + model.bn1.eps) * w["bn1.weight"] + w["bn1.bias"]
    logits = torch.relu(h) @ w["output_layer.weight"].T + w["output_layer.bias"]
    return torch.softmax(logits, dim=1).float().numpy()


def build_reference(models: dict[str, Path], out: Path, device: str = "cpu", source: Path = BUNDLED) -> Path:
    """Write the reference directory ``out`` for ``models`` (keys esm2, dnabert_s, classifier)."""
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        for suffix in (".fa", "_chunked500.fa", "_identified_nucleotide.fa", "_identified_protein.faa"):
            shutil.copyfile(source / f"{case}{suffix}", out / f"{case}{suffix}")
        ids, nts = _fasta(out / f"{case}_identified_nucleotide.fa")
        aa_ids, aas = _fasta(out / f"{case}_identified_protein.faa")
        assert aa_ids == ids
        dn = dnabert_s_vectors(models["dnabert_s"], nts, device)
        torch.save({"nucleotide": ids, "data": [{"label": i, "mean_representation": v.tolist()} for i, v in zip(ids, dn)]},
                   out / f"{case}_output_1_DNABERT_S.pt")
        esm_ids, esm_vectors = esm2_vectors(models["esm2"], ids, aas, device)
        torch.save({"proteins": esm_ids, "data": esm_vectors}, out / f"{case}_output_1_ESM.pt")
        by_id = dict(zip(esm_ids, esm_vectors))
        features = np.concatenate([dn, torch.stack([by_id[i] for i in ids]).numpy()], axis=1)
        scores = classifier_scores(models["classifier"], features)
        with open(out / f"{case}_prediction_results.txt", "w") as f:
            f.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
            for i, (s1, s2) in zip(ids, scores):
                f.write(f"{i}\t{'virus' if s2 > s1 else 'others'}\t{s1}\t{s2}\n")
        windows: dict[str, list[float]] = {}
        for i, (s1, s2) in zip(ids, scores):
            best = windows.setdefault(i[:-2], [-1.0, -1.0])
            best[0], best[1] = max(best[0], float(s1)), max(best[1], float(s2))
        with open(out / f"{case}_prediction_results_highestscore.csv", "w") as f:
            f.write("Modified_ID\tIs_Virus\n")
            for w in sorted(windows):
                f.write(f"{w}\t{windows[w][1] >= windows[w][0]}\n")
    return out


def full_size_models(directory: Path, seed: int = 0) -> dict[str, Path]:
    """Random-weight models of the published sizes (ESM-2 3B stored in FP16 as published, DNABERT-S
    12 x 768 with a 4,096-piece tokenizer, the classifier 3328 -> 512 -> 2), in the real formats."""
    from virnucflow.steps.demo import (random_classifier, random_dnabert, random_esm2, save_dnabert_dir, save_fair_esm,
                                 save_original_classifier, train_dna_tokenizer)
    from virnucflow.models.dnabert_s import DNABERTSConfig
    from workloads.published import KNOWN_CONFIGS

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"esm2": directory / "esm2_t36_3B_random.pt", "dnabert_s": directory / "dnabert_s_random",
             "classifier": directory / "classifier_random.pth"}
    if not paths["esm2"].exists():
        save_fair_esm(random_esm2(KNOWN_CONFIGS["esm2_t36_3B_UR50D"], seed).half(), paths["esm2"])
    rng = np.random.default_rng(seed)
    tok = train_dna_tokenizer(["".join(rng.choice(list("ACGT"), 5000)) for _ in range(400)], vocab_size=4096)
    config = DNABERTSConfig(vocab_size=tok.get_vocab_size())
    if not paths["dnabert_s"].exists():
        save_dnabert_dir(random_dnabert(config, seed + 1), paths["dnabert_s"], tok)
    width = KNOWN_CONFIGS["esm2_t36_3B_UR50D"].embed_dim + config.hidden_size
    save_original_classifier(random_classifier(width, 512, seed + 2), paths["classifier"])
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.make_reference", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, required=True, help="where the models are (or go, with --full-size)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full-size", action="store_true", help="write random-weight models of the published sizes first")
    a = p.parse_args(argv)
    if a.full_size:
        models = full_size_models(a.models)
    else:
        models = {"esm2": a.models / "esm2_demo.pt", "dnabert_s": a.models / "dnabert_s_demo",
                  "classifier": a.models / "virnucpro_demo.pth"}
    build_reference(models, a.out, a.device)
    print(f"reference for {', '.join(str(v) for v in models.values())} in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
