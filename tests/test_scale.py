"""A whole sequencing run: batches of samples, shard plans, per-shard scoring and the streamed gather.

The scores must not depend on how frames were cut into shards or which samples
shared a job: shards are cut at whole 4,096-frame classifier batches of each
sample, so per-shard scoring computes the very batches whole-sample scoring
does, and the per-sample outputs are equal byte for byte whatever the layout.
"""

from __future__ import annotations

import numpy as np
import pytest

from virnucflow.planning.batches import plan_batches
from virnucflow.io.features import Embeddings, write_h5
from virnucflow.errors import InputError
from virnucflow.steps.shard import CLASSIFIER_BATCH, plan_shards, read_plan, read_planned_shard

from workloads.frames import SENSE

OUTPUTS = ("prediction_results.txt", "prediction_results_highestscore.csv", "summary.tsv", "windows.bed", "windows.tsv")


def test_small_samples_share_a_batch_large_ones_get_their_own():
    frames = {"a": 100, "b": 250_000, "c": 80_000, "big": 1_000_000, "d": 10, "e": None, "f": 5}
    batches = plan_batches(frames, "auto", shard_frames=300_000, max_shards=16)
    assert {n: (b.samples, b.shards) for n, b in batches.items()} == {
        "a": (["a", "b", "c"], 2),  # closed at 330,100 frames: ceil(330,100 / 300,000) shards
        "big": (["big"], 4),
        "d": (["d", "f"], 1),  # pooled across the large sample, in sheet order
        "e": (["e"], 1),  # unreadable: its own batch (preprocessing says why)
    }
    assert plan_batches({"x": 5_000_000}, "auto", 300_000, 16)["x"].shards == 16  # at most max_shards
    # shards: N: each sample its own batch, at most one shard per 4,096 frames
    fixed = plan_batches({"a": 100, "b": 20_000, "c": None}, 3, 300_000, 16)
    assert {n: (b.samples, b.shards) for n, b in fixed.items()} == {"a": (["a"], 1), "b": (["b"], 3), "c": (["c"], 3)}
    assert plan_batches({"b": 9_000}, 8, 300_000, 16)["b"].shards == 3


def _identified(folder, name, n, seed):
    """A sample's identified files of ``n`` frames of varied length (as preprocessing writes them)."""
    rng = np.random.default_rng(seed)
    nt, aa = folder / f"{name}.fa", folder / f"{name}.faa"
    with open(nt, "w") as fn, open(aa, "w") as fa:
        for i in range(n):
            k = int(rng.integers(10, 170))
            fid = f"{name}r{i // 6}_chunk_{(i // 2) % 3 + 1}{['F1', 'F2', 'R1'][i % 3]}"
            fn.write(f">{fid}\n{''.join(rng.choice(SENSE, k))}A\n")
            fa.write(f">{fid}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), k))}\n")
    return nt, aa


def test_plans_cut_at_whole_classifier_batches_and_read_back_every_frame_once(tmp_path):
    files = {"s1": _identified(tmp_path, "s1", 10_000, 1), "s2": _identified(tmp_path, "s2", 50, 2),
             "s3": _identified(tmp_path, "s3", 9_000, 3)}
    expected = {s: [line.rstrip("\n") for line in open(f[0])] for s, f in files.items()}
    for n in (1, 2, 3, 5, 9):
        counts = plan_shards(list(files), files, n, tmp_path / f"plan{n}.tsv")
        assert sum(counts) == 19_050 and len(counts) == n
        plan = read_plan(tmp_path / f"plan{n}.tsv")
        parts = plan[plan["stop"] > plan["first"]]
        # every part starts at a sample's start or a whole number of classifier batches into it
        assert all(first % CLASSIFIER_BATCH == 0 for first in parts["first"])
        got: dict[str, list[str]] = {s: [] for s in files}
        for shard in dict.fromkeys(plan["shard"]):
            sh = read_planned_shard(tmp_path / f"plan{n}.tsv", shard, files)
            assert sum(c for _, c in sh.samples) == len(sh.ids) == len(sh.index)
            start = 0
            for sample, count in sh.samples:
                for k in range(start, start + count):
                    got[sample] += [f">{sh.ids[k]}", sh.nucleotides[k]]
                start += count
            tokens = parts[parts["shard"] == shard]
            assert int(tokens["esm2_tokens"].sum()) == sum(len(p) + 2 for p in sh.proteins)
        assert got == expected
    # balanced within about one classifier batch of frames
    counts = plan_shards(["s1"], files, 2, tmp_path / "p.tsv")
    assert counts == [4096, 5904]  # the cut nearest the half of the cost (~5,000 frames): 4,096, not 8,192


def test_a_changed_identified_file_is_refused_not_misread(tmp_path):
    files = {"s": _identified(tmp_path, "s", 5000, 1)}
    plan_shards(["s"], files, 2, tmp_path / "p.tsv")
    files["s"][0].write_text(files["s"][0].read_text().replace(">", ">x", 5000))
    with pytest.raises(InputError, match="is not where .* says: the identified files changed after planning"):
        read_planned_shard(tmp_path / "p.tsv", "2-of-2", files)


def _records(folder, name, n_frames):
    """records.tsv matching :func:`_identified`'s IDs (six frames per record, windows 1-3)."""
    path = folder / f"{name}.records.tsv"
    n_records = -(-n_frames // 6)
    rows = []
    for r in range(n_records):
        frames = min(6, n_frames - 6 * r)
        rows.append(f"{name}r{r}\t{1300}\t3\t{frames}\n")
    path.write_text("record_id\tlength\tchunks\tframes\n" + "".join(rows))
    return path


def _vectors(ids, dim, seed):
    return np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)


def _split_embeddings(tmp_path, tag, files, plan_tsv, whole, demo_attrs):
    """Per-shard embedding files of a plan, cut from one whole table per model and sample."""
    shards = []
    for shard in dict.fromkeys(read_plan(plan_tsv)["shard"]):
        sh = read_planned_shard(plan_tsv, shard, files)
        paths = {}
        for model, dim in (("dnabert_s", 48), ("esm2", 32)):
            rows = []
            start = 0
            for sample, count in sh.samples:
                rows.append(whole[sample][model][sh.index[start:start + count]])
                start += count
            vectors = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
            paths[model] = tmp_path / f"{tag}_{model}_{shard}.h5"
            write_h5(paths[model], Embeddings(sh.ids, sh.index, vectors,
                                              {**demo_attrs, "model_kind": model, "samples": [list(p) for p in sh.samples]}))
        shards.append(paths)
    return shards


def test_scores_and_outputs_do_not_depend_on_the_shard_layout_or_the_batch(tmp_path, monkeypatch):
    """One sample alone in 1, 2 or 4 shards, or pooled with others: the same five files, byte for byte,
    also when the gather works in many small blocks and spills sorted runs to disk; and they are those
    of scoring the sample whole (virnucflow predict)."""
    from virnucflow.steps import predict as predict_mod
    from virnucflow.steps.demo import build_demo_models
    from virnucflow.steps.predict import gather_sample, predict_sample
    from virnucflow.steps.score import score_shard

    models = tmp_path / "models"
    build_demo_models({"esm2": models / "esm2.pt", "dnabert_s": models / "dnabert_s", "classifier": models / "clf.pth"}, seed=0)
    sizes = {"a": 9_500, "b": 40, "c": 4_200}
    files = {s: _identified(tmp_path, s, n, k) for k, (s, n) in enumerate(sizes.items())}
    records = {s: _records(tmp_path, s, n) for s, n in sizes.items()}
    whole = {s: {m: _vectors(range(n), d, hash((s, m)) % 1000) for m, d in (("dnabert_s", 48), ("esm2", 32))}
             for s, n in sizes.items()}
    layouts = {"alone1": (["a"], 1), "alone2": (["a"], 2), "alone4": (["a"], 4), "pooled": (["b", "a", "c"], 3)}
    outputs = {}
    for tag, (samples, n) in layouts.items():
        plan = tmp_path / f"{tag}.tsv"
        plan_shards(samples, {s: files[s] for s in samples}, n, plan)
        scores = []
        for k, paths in enumerate(_split_embeddings(tmp_path, tag, files, plan, whole, {"demo_model": True})):
            scores.append(tmp_path / f"{tag}_{k}.scores.tsv")
            score_shard({"dnabert_s": paths["dnabert_s"], "esm2": paths["esm2"]}, models / "clf.pth", scores[-1], tmp_path / f"{tag}_{k}.json")
        if tag == "alone4":  # small blocks, many sorted runs in temporary files
            monkeypatch.setattr(predict_mod, "BLOCK_RECORDS", 97)
            monkeypatch.setattr(predict_mod, "RUN_WINDOWS", 300)
        out = tmp_path / tag
        out.mkdir()
        gather_sample("a", records["a"], scores, 500, *(out / f for f in OUTPUTS), demo=True)
        monkeypatch.undo()
        outputs[tag] = {f: (out / f).read_bytes() for f in OUTPUTS}
        assert not list(out.glob(".*")), "no temporary files left"
    for tag in layouts:
        assert outputs[tag] == outputs["alone1"], tag
    # the whole-sample path: one feature table, scored in the same batches
    nt = tmp_path / "whole_nt.h5"
    aa = tmp_path / "whole_aa.h5"
    ids = [line[1:].strip() for line in open(files["a"][0]) if line.startswith(">")]
    write_h5(nt, Embeddings(ids, np.arange(len(ids)), whole["a"]["dnabert_s"], {"demo_model": True}))
    write_h5(aa, Embeddings(ids, np.arange(len(ids)), whole["a"]["esm2"], {"demo_model": True}))
    manifest = tmp_path / "m.json"
    manifest.write_text('{"classifier": {"path": "%s"}}' % (models / "clf.pth"))
    ref = tmp_path / "ref"
    ref.mkdir()
    predict_sample({"dnabert_s": [nt], "esm2": [aa]}, manifest, records["a"], *(ref / f for f in OUTPUTS[:3]))
    for f in OUTPUTS[:3]:
        assert (ref / f).read_bytes() == outputs["alone1"][f], f
    lines = outputs["alone1"]["prediction_results.txt"].decode().splitlines()
    assert len(lines) == 2 + 9_500 and lines[0].startswith("# DEMO MODELS")


def test_a_sample_missing_frames_in_the_scores_is_refused(tmp_path):
    from virnucflow.errors import MergeError
    from virnucflow.steps.predict import gather_sample

    scores = tmp_path / "s.tsv"
    scores.write_text("sample\tindex\tid\tprediction\tscore1\tscore2\n"
                      "a\t0\tar0_chunk_1F1\tothers\t0.6\t0.4\na\t2\tar0_chunk_2F1\tothers\t0.6\t0.4\n")
    records = _records(tmp_path, "a", 3)
    with pytest.raises(MergeError, match="sample 'a' frame 2 where frame 1 was expected"):
        gather_sample("a", records, [scores], 500, *(tmp_path / f for f in OUTPUTS))
    assert not any((tmp_path / f).exists() for f in OUTPUTS)


@pytest.mark.slow
def test_pooled_samples_get_the_calls_they_get_alone(tmp_path):
    """shards: auto pools small samples into one embedding job; each sample's calls are those of the same
    sample in a batch of its own (shards: 1), its scores within 1e-6 (a frame's embedding can move by float
    rounding with the other frames packed beside it; the classifier batches are the same: see above), the
    window coordinates identical; with the default outputs the embedding files are gone once scored."""
    import io

    import pandas as pd

    from .conftest import ORIGINAL, REPO
    from .test_unusual_workflow import _jobs
    from .test_workflow import snakemake

    lam = REPO / "resources" / "demo" / "lambda_contigs.fa"
    rows = [("lam", lam), ("strands", ORIGINAL / "both_strands.fa"), ("lower", ORIGINAL / "lowercase.fa.gz")]
    defaults = "output: {embeddings: false, features: false, merged_pt: false, chunked: false}\n"
    results = {}
    for mode in ("auto", "1"):
        wd = tmp_path / mode
        wd.mkdir()
        (wd / "s.tsv").write_text("sample\tfasta\n" + "".join(f"{n}\t{p}\n" for n, p in rows))
        (wd / "o.yaml").write_text(defaults)
        res = snakemake(wd, config=["samples=s.tsv", f"shards={mode}"], configfiles=[wd / "o.yaml"])
        assert res.returncode == 0, res.stderr[-3000:]
        assert _jobs(res)["embed"] == (1 if mode == "auto" else 3), _jobs(res)
        assert not list(wd.rglob("*.h5")), "embedding files are removed once scored"
        results[mode] = {(n, f): (wd / "results" / n / f).read_bytes() for n, _ in rows for f in OUTPUTS}
    for (sample, name), pooled in results["auto"].items():
        alone = results["1"][(sample, name)]
        if name == "windows.bed":  # coordinates and IDs; the score column is round(1000 x score2)
            assert [r.split("\t")[:4] for r in pooled.decode().splitlines()] == [
                r.split("\t")[:4] for r in alone.decode().splitlines()]
            continue
        a, b = (pd.read_csv(io.BytesIO(x), sep="\t", comment="#", keep_default_na=False) for x in (pooled, alone))
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0, (sample, name)
        # scores: 1e-6, plus 1e-6 where written with 6 significant digits (windows.tsv, summary's rounding)
        tolerance = 1e-6 if name == "prediction_results.txt" else 2e-6
        for col in a.columns:
            x, y = pd.to_numeric(a[col], errors="coerce"), pd.to_numeric(b[col], errors="coerce")
            scores = a[col].astype(str).str.contains(r"\.").any()
            if scores:
                assert (x.isna() == y.isna()).all() and (a[col][x.isna()] == b[col][y.isna()]).all(), (sample, col)
                assert ((x - y).abs().fillna(0) <= tolerance).all(), (sample, name, col)
            else:
                assert a[col].tolist() == b[col].tolist(), (sample, name, col)  # IDs, calls, counts
    plan = (tmp_path / "auto" / "results" / "batches" / "lam" / "shards.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in plan[1:]] == ["lam", "strands", "lower"]  # one shard, three parts
    from .conftest import run_cli

    status = run_cli("status", tmp_path / "auto")  # each sample's own frames in the shared batch
    frames = {n: (tmp_path / "auto" / "results" / n / "preprocess" / "identified_protein.faa").read_text().count(">")
              for n, _ in rows}
    assert status.stdout.splitlines() == [f"{n}: steps 6/6, dnabert_s frames {frames[n]}/{frames[n]}, esm2 frames "
                                          f"{frames[n]}/{frames[n]}, finished" for n in sorted(frames)], status.stdout


def test_an_unchanged_model_is_not_checked_again(tmp_path, monkeypatch, caplog):
    """A model whose files have not changed since its last check (and the checking code neither) is taken from
    the user's cache of checks; a changed file is checked again, and refused if broken."""
    import json
    import logging

    from virnucflow.models.manifest import check_model
    from virnucflow.steps.demo import build_demo_models
    from virnucflow.errors import ModelFileError

    monkeypatch.setenv("VIRNUCFLOW_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "m"
    build_demo_models({"esm2": models / "esm2.pt", "dnabert_s": models / "dnabert_s", "classifier": models / "clf.pth"}, seed=0)
    caplog.set_level(logging.INFO, logger="virnucflow")
    first = check_model("esm2", str(models / "esm2.pt"), tmp_path / "a.json", allow_download=False)
    assert "unchanged since its last check" not in caplog.text
    second = check_model("esm2", str(models / "esm2.pt"), tmp_path / "b.json", allow_download=False)
    assert "unchanged since its last check" in caplog.text and second == first
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    check_model("dnabert_s", str(models / "dnabert_s"), None, allow_download=False)  # a directory model too
    caplog.clear()
    check_model("dnabert_s", str(models / "dnabert_s"), None, allow_download=False)
    assert "unchanged since its last check" in caplog.text
    data = (models / "esm2.pt").read_bytes()
    (models / "esm2.pt").write_bytes(data[: len(data) // 2])  # truncated: checked again, and refused
    with pytest.raises(ModelFileError):
        check_model("esm2", str(models / "esm2.pt"), tmp_path / "c.json", allow_download=False)
    assert not (tmp_path / "c.json").exists()


def test_a_plan_written_by_0_9_0_is_read(tmp_path):
    """0.9.0 wrote the token columns as esm2_tokens, dnabert_s_tokens; a run resumed after an upgrade reads
    them by name (and a file that is no plan is still refused)."""
    old = tmp_path / "shards.tsv"
    old.write_text("shard\tsample\tfirst\tstop\tnucleotide_offset\tprotein_offset\tesm2_tokens\tdnabert_s_tokens\n"
                   "1-of-1\ts\t0\t52\t0\t0\t8440\t6381\n")
    plan = read_plan(old)
    assert list(plan.columns) == ["shard", "sample", "first", "stop", "nucleotide_offset", "protein_offset",
                                  "dnabert_s_tokens", "esm2_tokens"]
    assert plan.loc[0, "esm2_tokens"] == 8440 and plan.loc[0, "dnabert_s_tokens"] == 6381
    (tmp_path / "other.tsv").write_text("shard\tsample\n1-of-1\ts\n")
    with pytest.raises(InputError, match="not a VirNucFlow shard plan"):
        read_plan(tmp_path / "other.tsv")
