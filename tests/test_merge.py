"""Merging per-shard embeddings: exact against the original's merged file, strict on IDs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from virnucflow.errors import MergeError
from virnucflow.io.features import Embeddings, export_merged_pt, merge_features, read_h5, write_h5
from virnucflow.steps.preprocess import iter_identified

from .conftest import REFERENCE, run_cli
from .originals import read_original_dnabert_pt, read_original_esm_pt

NAME = "test_with_orfs"


def _reference_tables():
    order = [f.id for f in iter_identified(REFERENCE / f"{NAME}_identified_nucleotide.fa", REFERENCE / f"{NAME}_identified_protein.faa")]
    pos = {i: k for k, i in enumerate(order)}
    nt_ids, nt = read_original_dnabert_pt(REFERENCE / f"{NAME}_output_1_DNABERT_S.pt")
    aa_ids, aa = read_original_esm_pt(REFERENCE / f"{NAME}_output_1_ESM.pt")
    # The original's ESM file is in fair-esm's length-sorted batch order, not input order.
    assert aa_ids != nt_ids
    mk = lambda ids, v, model: Embeddings(ids, np.array([pos[i] for i in ids]), v, {"model": model})
    return mk(nt_ids, nt, "dnabert"), mk(aa_ids, aa, "esm")


def _split(table: Embeddings, rows):
    return Embeddings([table.ids[r] for r in rows], table.index[rows], table.vectors[rows], table.attrs)


def _write_shards(tmp_path, prefix, table, splits):
    paths = []
    for k, rows in enumerate(splits):
        p = tmp_path / f"{prefix}{k}.h5"
        write_h5(p, _split(table, rows))
        paths.append(p)
    return paths


def test_merge_reproduces_original_merged_pt(tmp_path):
    nt, aa = _reference_tables()
    nt_files = _write_shards(tmp_path, "nt", nt, [[2, 0], [3], [1]])
    aa_files = _write_shards(tmp_path, "aa", aa, [[1], [0, 3, 2]])
    merged = merge_features({"dnabert_s": nt_files, "esm2": aa_files}, tmp_path / "features.h5")
    export_merged_pt(merged, tmp_path / "merged.pt")
    expected = torch.load(REFERENCE / f"{NAME}_output_1_merged.pt", weights_only=True)
    assert merged.ids == expected["ids"]
    assert np.array_equal(merged.vectors, expected["data"].numpy())  # bit-exact: a concatenation
    back = read_h5(tmp_path / "features.h5", dataset="features")
    assert back.ids == expected["ids"] and np.array_equal(back.vectors, expected["data"].numpy())
    assert back.attrs["dims"] == "[768, 2560]"
    exported = torch.load(tmp_path / "merged.pt", weights_only=True)
    assert exported["ids"] == expected["ids"]
    assert torch.equal(exported["data"], expected["data"])


def test_missing_ids_are_named(tmp_path):
    nt, aa = _reference_tables()
    nt_files = _write_shards(tmp_path, "nt", nt, [[0, 1, 2, 3]])
    aa_files = _write_shards(tmp_path, "aa", aa, [[0, 1, 3]])  # drops aa.ids[2]
    with pytest.raises(MergeError) as err:
        merge_features({"dnabert_s": nt_files, "esm2": aa_files}, tmp_path / "features.h5")
    assert str(err.value) == f"1 IDs have no ESM-2 embedding: '{aa.ids[2]}'"
    assert not (tmp_path / "features.h5").exists()


def test_extra_and_duplicate_ids_are_named(tmp_path):
    nt, aa = _reference_tables()
    extra = Embeddings(aa.ids + ["ghost_chunk_1F1"], np.append(aa.index, 9), np.vstack([aa.vectors, aa.vectors[:1]]))
    nt_files = _write_shards(tmp_path, "nt", nt, [[0, 1, 2, 3]])
    aa_files = _write_shards(tmp_path, "aa", extra, [[0, 1, 2, 3, 4]])
    with pytest.raises(MergeError, match=r"^1 IDs have no DNABERT-S embedding: 'ghost_chunk_1F1'$"):
        merge_features({"dnabert_s": nt_files, "esm2": aa_files}, tmp_path / "f.h5")
    dup_files = _write_shards(tmp_path, "dup", nt, [[0, 1], [1, 2, 3]])
    with pytest.raises(MergeError, match=rf"^DNABERT-S embeddings list these IDs more than once: '{nt.ids[1]}'$"):
        merge_features({"dnabert_s": dup_files, "esm2": aa_files}, tmp_path / "f.h5")


def test_shifted_positions_are_refused(tmp_path):
    """Same ID set but rows that claim other input positions: the v2 rewrite's silent shift."""
    nt, aa = _reference_tables()
    shifted = Embeddings(aa.ids, np.roll(aa.index, 1), aa.vectors)
    with pytest.raises(MergeError, match="IDs at different input positions"):
        merge_features({"dnabert_s": _write_shards(tmp_path, "nt", nt, [[0, 1, 2, 3]]), "esm2": _write_shards(tmp_path, "aa", shifted, [[0, 1, 2, 3]])}, tmp_path / "f.h5")


def test_non_finite_vectors_are_refused(tmp_path):
    nt, aa = _reference_tables()
    bad = aa.vectors.copy()
    bad[1, 7] = np.nan
    aa_bad = Embeddings(aa.ids, aa.index, bad)
    res = run_cli(
        "merge", "--dnabert-s", *_write_shards(tmp_path, "nt", nt, [[0, 1, 2, 3]]),
        "--esm2", *_write_shards(tmp_path, "aa", aa_bad, [[0, 1, 2, 3]]), "--out", tmp_path / "f.h5",
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"virnucflow: error: non-finite feature values for '{aa.ids[1]}'"
    assert not (tmp_path / "f.h5").exists()


def test_empty_shards_merge_to_empty_features(tmp_path):
    nt, aa = _reference_tables()
    empty = lambda t: Embeddings([], np.zeros(0, np.int64), np.zeros((0, t.dim), np.float32))
    write_h5(tmp_path / "nt.h5", empty(nt))
    write_h5(tmp_path / "aa.h5", empty(aa))
    table = merge_features({"dnabert_s": [tmp_path / "nt.h5"], "esm2": [tmp_path / "aa.h5"]}, tmp_path / "f.h5")
    assert table.vectors.shape == (0, 768 + 2560)


def test_predict_scores_the_shards_joined_as_the_merge_joins_them(tmp_path):
    """predict reads the per-shard embedding files itself (features.h5 is optional): however the
    frames are split into shards, it writes exactly the files that scoring the original's merged
    features gives."""
    from virnucflow.steps.demo import random_classifier, save_original_classifier

    nt, aa = _reference_tables()
    save_original_classifier(random_classifier(768 + 2560, 512, 0), tmp_path / "clf.pth")
    (tmp_path / "models.json").write_text(f'{{"classifier": {{"path": "{tmp_path / "clf.pth"}"}}}}')
    res = run_cli("preprocess", "--fasta", REFERENCE / f"{NAME}.fa", "--chunk-length", 500, "--chunked", tmp_path / "c.fa",
                  "--nucleotide", tmp_path / "n.fa", "--protein", tmp_path / "p.faa", "--records", tmp_path / "records.tsv")
    assert res.returncode == 0, res.stderr
    outputs = {}
    for name, nt_split, aa_split in (("one", [[0, 1, 2, 3]], [[0, 1, 2, 3]]), ("three", [[2, 0], [3], [1]], [[1], [0, 3, 2]])):
        d = tmp_path / name
        d.mkdir()
        res = run_cli("predict", "--dnabert-s", *_write_shards(d, "nt", nt, nt_split), "--esm2", *_write_shards(d, "aa", aa, aa_split),
                      "--models-json", tmp_path / "models.json", "--records", tmp_path / "records.tsv",
                      "--predictions", d / "p.txt", "--highest", d / "h.csv", "--summary", d / "s.tsv")
        assert res.returncode == 0, res.stderr
        outputs[name] = [(d / f).read_bytes() for f in ("p.txt", "h.csv", "s.tsv")]
    assert outputs["one"] == outputs["three"]
    # The original's merged features scored in a fresh process (as the CLI's: a CPU matmul's rounding
    # can depend on the threads, which earlier tests may have changed in this one).
    script = (f"import torch; from virnucflow.models.classifier import classify, load_classifier; "
              f"from virnucflow.steps.predict import write_predictions; "
              f"e = torch.load({str(REFERENCE / f'{NAME}_output_1_merged.pt')!r}, weights_only=True); "
              f"m, _ = load_classifier({str(tmp_path / 'clf.pth')!r}); "
              f"write_predictions({str(tmp_path / 'expected.txt')!r}, e['ids'], classify(m, e['data']).numpy())")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert outputs["one"][0] == (tmp_path / "expected.txt").read_bytes()


def test_scores_gathered_batch_by_batch_are_those_of_the_whole_table(tmp_path):
    """predict never builds the N x 3328 table: it gathers each classifier batch from the two models'
    vectors. Over several batches, from shuffled shards, the scores are those of the whole table."""
    from virnucflow.models.classifier import BATCH, classify
    from virnucflow.steps.demo import random_classifier
    from virnucflow.io.features import read_features
    from virnucflow.steps.predict import score_features

    n = 2 * BATCH + 123
    rng = np.random.default_rng(3)
    ids = [f"r{k}_chunk_1F1" for k in range(n)]
    nt = Embeddings(ids, np.arange(n), rng.standard_normal((n, 768), dtype=np.float32))
    aa = Embeddings(ids, np.arange(n), rng.standard_normal((n, 2560), dtype=np.float32))
    perm = rng.permutation(n)
    features = read_features({"dnabert_s": _write_shards(tmp_path, "nt", nt, [perm[: n // 3], perm[n // 3:]]), "esm2": _write_shards(tmp_path, "aa", aa, [perm[::-1]])})
    table = features.table()
    assert table.ids == ids and np.array_equal(table.vectors, np.concatenate([nt.vectors, aa.vectors], axis=1))
    model = random_classifier(768 + 2560, 512, 0)
    expected = classify(model, torch.from_numpy(table.vectors)).numpy()
    assert np.array_equal(score_features(model, features), expected)
