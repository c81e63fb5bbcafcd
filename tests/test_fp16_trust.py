"""FP16 you can trust: the NaN/Inf gate heals, merge refuses mixed settings, rollback is one edit,
and `snakemake fp32_compare` proves (or refutes) the production path on the sample's own frames.

An FP16 overflow is injected with a real model file: the demo ESM-2 with the embedding row of
tryptophan (W) scaled by 1e5, which is past FP16's largest value (65,504) but harmless in FP32
(the first LayerNorm normalises it). FP16 runs on the CPU only when asked (``fp16_on_cpu``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from virnucflow.steps.demo import DEMO_ESM, build_demo_models, random_esm2, save_fair_esm
from virnucflow.planning.config import embedding_options, model_options
from virnucflow.engine import EmbedOptions, Embedder
from virnucflow.steps.embed import embed_shard
from virnucflow.errors import ConfigError, MergeError, NumericalError
from virnucflow.io.features import Embeddings, merge_features, write_h5
from virnucflow.models.manifest import check_models
from virnucflow.models.esm2 import ALPHABET, tokenize
from virnucflow.models.registry import load_model
from virnucflow.steps.nan_gate import nan_gate
from virnucflow.io.features import write_embedding_info
from virnucflow.steps.shard import SHARD_HEADER

from .conftest import REPO

W = ALPHABET.index("W")


def _models(d, scale: float | None):
    build_demo_models({"esm2": d / "e.pt", "dnabert_s": d / "dnabert", "classifier": d / "c.pth"})
    m = random_esm2(DEMO_ESM, 0)  # the demo ESM-2 (build_demo_models uses seed 0)
    with torch.no_grad():
        if scale is None:
            m.embed_tokens.weight[W] = float("inf")
        else:
            m.embed_tokens.weight[W] *= scale
    save_fair_esm(m, d / "hot.pt", demo=True)
    check_models({"esm2": d / "hot.pt", "dnabert_s": d / "dnabert", "classifier": d / "c.pth", "download": False},
                 d / "m.json")
    return d


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    return _models(tmp_path_factory.mktemp("hot"), 1e5)


ROWS = [(0, "a_chunk_1F1", "ACGTACGTACGTA", "MKLAAG"), (1, "b_chunk_1F1", "ACGTACGTACGTA", "MKWAAG"),
        (2, "c_chunk_1R2", "ACGTAAGTACGTA", "MKWAAG"), (3, "d_chunk_2F3", "ACGTTCGTACGTA", "PPLKDE")]


def _shard(path):
    path.write_text(SHARD_HEADER + "".join("\t".join(map(str, r)) + "\n" for r in ROWS))
    return path


def test_fp16_overflow_is_healed_in_fp32_and_recorded(hot, tmp_path):
    opts = EmbedOptions.defaults(device="cpu", fp16_on_cpu=True)
    embed_shard("esm2", hot / "m.json", _shard(tmp_path / "s.tsv"), tmp_path / "o.h5", opts, nonfinite_out=tmp_path / "nf.tsv")
    assert (tmp_path / "nf.tsv").read_text().splitlines() == [
        "id\tlength\tnonfinite\tprecision\trecomputed_precision\tfinite_after_recompute",
        "b_chunk_1F1\t6\tnan\tfp16\tfp32\tyes",
        "c_chunk_1R2\t6\tnan\tfp16\tfp32\tyes",
    ]
    with h5py.File(tmp_path / "o.h5") as h5:
        vectors, attrs = h5["embeddings"][()], dict(h5.attrs)
    assert np.isfinite(vectors).all() and attrs["precision"] == "fp16" and attrs["recomputed_fp32"] == 2
    # the healed rows are the FP32 reference path's vectors of those sequences (same batch: bit-identical)
    model, _ = load_model("esm2", str(hot / "hot.pt"))
    ref = Embedder.create(model, opts.reference()).embed_tokens([tokenize("MKWAAG")])
    assert np.array_equal(vectors[1], ref[0]) and np.array_equal(vectors[2], ref[0])
    # the others stayed FP16 (not equal to their FP32 values, but close)
    model, _ = load_model("esm2", str(hot / "hot.pt"))
    ref_a = Embedder.create(model, opts.reference()).embed_tokens([tokenize("MKLAAG")])[0]
    assert not np.array_equal(vectors[0], ref_a) and np.abs(vectors[0] - ref_a).max() < 1e-2


def test_nonfinite_in_fp32_too_fails_the_job_with_the_ids(tmp_path):
    d = _models(tmp_path, None)  # tryptophan's embedding is Inf: no precision can help
    with pytest.raises(NumericalError, match=r"^.*s\.tsv: 2 esm2 embeddings are not finite in fp32 either "
                                             r"\(first: b_chunk_1F1, c_chunk_1R2\); these sequences cannot be embedded"):
        embed_shard("esm2", d / "m.json", _shard(tmp_path / "s.tsv"), tmp_path / "o.h5",
                    EmbedOptions.defaults(device="cpu", fp16_on_cpu=True), nonfinite_out=tmp_path / "nf.tsv")
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "nf.tsv").exists()


def test_gate_passes_below_and_fails_above_the_recompute_fraction(hot, tmp_path):
    opts = EmbedOptions.defaults(device="cpu", fp16_on_cpu=True)
    for model in ("esm2", "dnabert_s"):
        embed_shard(model, hot / "m.json", _shard(tmp_path / "s.tsv"), tmp_path / f"{model}.h5", opts,
                    nonfinite_out=tmp_path / f"{model}.tsv")
    # the shard's record, as the embedding job writes it: frames and precision per model
    write_embedding_info({m: tmp_path / f"{m}.h5" for m in ("dnabert_s", "esm2")}, tmp_path / "1-of-1.json")
    args = (["esm2", "dnabert_s"], [tmp_path / "1-of-1.json"], [tmp_path / "esm2.tsv", tmp_path / "dnabert_s.tsv"])
    table = nan_gate(*args, tmp_path / "gate.tsv", max_fraction=0.5)
    assert table[["model", "frames", "precision", "recomputed_fp32", "failed"]].values.tolist() == [
        ["esm2", 4, "fp16", 2, 0], ["dnabert_s", 4, "fp16", 0, 0]]
    with pytest.raises(NumericalError) as err:
        nan_gate(*args, tmp_path / "gate2.tsv", max_fraction=0.001)
    assert str(err.value) == (
        "esm2: 2 of 4 frames (50.00%) had non-finite vectors in fp16 and were recomputed in fp32, more than "
        "qc.max_fp32_recompute_fraction (0.001): fp16 is not serving this data; set embedding.esm2.precision: fp32 "
        "(or embedding.precision: fp32) in the config and rerun")
    assert not (tmp_path / "gate2.tsv").exists()


def test_merge_refuses_shards_embedded_with_different_settings(tmp_path):
    def shard(name, ids, precision, dim):
        table = Embeddings(ids, np.arange(len(ids)), np.ones((len(ids), dim), np.float32),
                           {"precision": precision, "attention": "varlen", "packing": True})
        write_h5(tmp_path / name, table)
        return tmp_path / name

    nt = [shard("nt1.h5", ["a_chunk_1F1"], "fp16", 4), shard("nt2.h5", ["b_chunk_1F1"], "fp16", 4)]
    aa = [shard("aa1.h5", ["a_chunk_1F1"], "fp16", 3), shard("aa2.h5", ["b_chunk_1F1"], "fp32", 3)]
    with pytest.raises(MergeError, match=r"^shards of one model were embedded with different settings \(.*aa1\.h5: "
                                         r"precision fp16, attention varlen, packing True; .*aa2\.h5: precision fp32"):
        merge_features({"dnabert_s": nt, "esm2": aa}, tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


def test_per_model_keys_and_environment_overrides():
    embedding = {"precision": "fp16", "packing": True, "attention": "auto", "esm2": {"precision": "bf16"}}
    assert model_options(embedding, "esm2", {})["precision"] == "bf16"
    assert model_options(embedding, "dnabert_s", {})["precision"] == "fp16"
    assert model_options(embedding, "esm2", {"VIRNUCFLOW_PRECISION": "fp32"})["precision"] == "fp32"
    assert model_options(embedding, "dnabert_s", {"VIRNUCPRO_DISABLE_FP16": "1"})["precision"] == "fp32"
    assert model_options(embedding, "esm2", {"VIRNUCPRO_DISABLE_FP16": "1"})["precision"] == "bf16"  # not fp16
    with pytest.raises(ConfigError, match=r"^VIRNUCFLOW_PRECISION='fp8': expected fp16, bf16 or fp32$"):
        model_options(embedding, "esm2", {"VIRNUCFLOW_PRECISION": "fp8"})


# --------------------------------------------------------------------------- through Snakemake

def _snakemake(workdir, *args, config=(), configfiles=(), env=None):
    cmd = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--configfile", str(REPO / "config" / "demo.yaml"), *map(str, configfiles)]
    if config:
        cmd += ["--config", *config]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


LAMBDA = REPO / "resources" / "demo" / "lambda_contigs.fa"


@pytest.fixture(scope="module")
def healed_run(hot, tmp_path_factory):
    """The workflow with the overflowing ESM-2 in FP16 on the CPU, the gate loosened to let it through."""
    wd = tmp_path_factory.mktemp("wf")
    (wd / "s.tsv").write_text(f"sample\tfasta\nlam\t{LAMBDA}\n")
    (wd / "hot.yaml").write_text(json.dumps({
        "samples": "s.tsv", "embedding": {"fp16_on_cpu": True},
        "models": {"esm2": str(hot / "hot.pt"), "dnabert_s": str(hot / "dnabert"), "classifier": str(hot / "c.pth")}}))
    (wd / "loose.yaml").write_text(json.dumps({"qc": {"max_fp32_recompute_fraction": 1.0}}))
    res = _snakemake(wd, configfiles=[wd / "hot.yaml", wd / "loose.yaml"])
    assert res.returncode == 0, res.stderr[-3000:]
    return wd, [wd / "hot.yaml"]


@pytest.mark.slow
def test_workflow_heals_records_and_gates(healed_run):
    wd, configfiles = healed_run
    batch = wd / "results" / "batches" / "lam"
    gate = pd.read_csv(batch / "nan_gate.tsv", sep="\t")
    listed = pd.concat([pd.read_csv(p, sep="\t") for p in sorted((batch / "nonfinite" / "esm2").glob("*.tsv"))])
    lines = (wd / "results" / "lam" / "preprocess" / "identified_protein.faa").read_text().splitlines()
    proteins = dict(zip((h[1:] for h in lines[::2]), lines[1::2]))
    assert len(listed) > 0 and set(listed["finite_after_recompute"]) == {"yes"}
    assert all("W" in proteins[i] for i in listed["id"] if i in proteins)  # exactly the tryptophan frames
    esm = gate[gate["model"] == "esm2"]
    assert esm["recomputed_fp32"].sum() == len(listed) and (gate["failed"] == 0).all()
    assert gate.loc[gate["model"] == "dnabert_s", "recomputed_fp32"].sum() == 0
    with h5py.File(wd / "results" / "lam" / "features.h5") as h5:
        assert np.isfinite(h5["features"][()]).all()
    # the default gate (0.1%) refuses this run: only the gate reruns, and it names the edit
    res = _snakemake(wd, configfiles=configfiles)
    assert res.returncode != 0
    total = int(gate.loc[gate["model"] == "esm2", "frames"].sum())
    assert (f"virnucflow: error: esm2: {len(listed)} of {total} frames" in res.stderr
            and "set embedding.esm2.precision: fp32 (or embedding.precision: fp32)" in res.stderr), res.stderr[-2000:]
    stats = res.stderr.split("Job stats")[1].split("\n\n")[0]
    assert "nan_gate" in stats and "embed" not in [line.split()[0] for line in stats.splitlines() if line.split()]


@pytest.mark.slow
def test_environment_override_reruns_the_embedding(healed_run):
    wd, configfiles = healed_run
    loose = configfiles + [wd / "loose.yaml"]
    for env in ({"VIRNUCFLOW_PRECISION": "fp32"}, {"VIRNUCPRO_DISABLE_FP16": "1"}):
        res = _snakemake(wd, "-n", configfiles=loose, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        jobs = res.stdout + res.stderr
        assert any(line.split() == ["embed", "1"] for line in jobs.splitlines()), jobs[-2000:]  # 52 frames: one shard
        assert "precision fp32 from the environment" in jobs
    res = _snakemake(wd, "-n", configfiles=loose)  # without them: no embedding job (at most the gate, see above)
    assert res.returncode == 0 and not re.search(r"^(rule embed:|embed\s+\d+$)", res.stdout + res.stderr, re.M)


@pytest.mark.slow
def test_fp32_compare_on_the_demo(tmp_path):
    demo = REPO / "resources" / "demo"
    (tmp_path / "s.tsv").write_text(f"sample\tfasta\ndemo_lambda\t{demo / 'lambda_contigs.fa'}\n"
                                    f"demo_controls\t{demo / 'synthetic_controls.fa.gz'}\n")
    res = _snakemake(tmp_path, "fp32_compare", config=["samples=s.tsv"])
    assert res.returncode == 0, res.stderr[-3000:]
    for sample in ("demo_lambda", "demo_controls"):
        qc = tmp_path / "results" / sample / "qc" / "fp32_compare"
        for name in ("per_sequence.tsv", "summary.tsv", "calls.tsv", "call_agreement.tsv", "cosine.png", "scores.png"):
            assert (qc / name).stat().st_size > 0, name
        summary = pd.read_csv(qc / "summary.tsv", sep="\t")
        assert set(summary["model"]) == {"esm2", "dnabert_s"}
        # on the CPU the production path is FP32 packed SDPA: equal to the reference up to summation order
        assert summary["min_pooled_cosine"].min() > 0.99999 and summary.filter(like="pass_").all().all()
        per_seq = pd.read_csv(qc / "per_sequence.tsv", sep="\t")
        frames = sum(1 for line in open(tmp_path / "results" / sample / "preprocess" / "identified_protein.faa") if line.startswith(">"))
        assert frames < 200 and len(per_seq) == 2 * frames  # strata smaller than per_stratum: every frame, both models
        agreement = pd.read_csv(qc / "call_agreement.tsv", sep="\t")
        assert agreement.loc[0, "frames_flipped"] == 0
    # a production path that does not agree with FP32 fails with the model, stratum, metric and the edit: a
    # model whose packed path is wrong (the third model of tests/toy_plugin, its file carrying a packing bug)
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"table": torch.arange(18, dtype=torch.float32).view(6, 3) / 18, "packed_offset": 1.0}, bad / "toy.pt")
    (bad / "toy.yaml").write_text(f"samples: {tmp_path / 's.tsv'}\nmodels:\n  toy: {bad / 'toy.pt'}\n")
    plugin = os.pathsep.join(filter(None, [str(REPO / "tests" / "toy_plugin"), os.environ.get("PYTHONPATH")]))
    res = _snakemake(bad, "fp32_compare", configfiles=[bad / "toy.yaml"], env={"PYTHONPATH": plugin})
    assert res.returncode != 0
    line = next(x for x in res.stderr.splitlines() if x.startswith("virnucflow: error: fp32_compare: "))
    assert "stratum" in line and "fails fp32_compare.min_pooled_cosine (>= 0.99)" in line
    assert line.endswith("roll back with embedding.toy.packing: false (or embedding.packing: false)")


def test_fp32_compare_loads_each_model_twice(tmp_path, monkeypatch):
    """Once for its tokenizer, kept as the production model, and once from the file for the FP32
    reference (a 3B checkpoint read three times cost seconds each before)."""
    import virnucflow.steps.fp32_compare as fc
    from virnucflow.planning.config import schema_defaults
    from virnucflow.steps.preprocess import preprocess

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    check_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth",
                  "download": False}, tmp_path / "m.json")
    preprocess(REPO / "resources" / "demo" / "lambda_contigs.fa", 500, tmp_path / "c.fa", tmp_path / "n.fa", tmp_path / "p.faa")
    loads = []
    monkeypatch.setattr(fc, "load_model", lambda name, path: loads.append(name) or load_model(name, path))
    defaults = schema_defaults()
    outputs = {k: tmp_path / f"{k}.out" for k in ("per_sequence", "summary", "calls", "agreement", "cosine_png", "scores_png")}
    options, _ = embedding_options({**defaults["embedding"], "device": "cpu"})
    summary = fc.fp32_compare(tmp_path / "n.fa", tmp_path / "p.faa", tmp_path / "m.json", options,
                              defaults["fp32_compare"], outputs)
    assert sorted(loads) == ["dnabert_s", "dnabert_s", "esm2", "esm2"]
    assert summary["min_pooled_cosine"].min() > 0.99999 and summary.filter(like="pass_").all().all()
