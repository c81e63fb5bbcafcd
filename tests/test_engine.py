"""The packed path on the CPU: fallback backends, every option combination, kernels, dedup, OOM.

FP32 on the CPU: packed and padded compute the same arithmetic, so they agree
to 1e-5 (summation order only). BF16 keeps ~3 significant digits, so BF16
results are compared by cosine (>= 0.999) against FP32.
"""

from __future__ import annotations

import itertools
import json
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from virnucflow.engine import EmbedOptions, Embedder, EmbedStats
from virnucflow.steps.embed import dedup, embed_shard, embed_shard_models, read_ahead
from virnucflow.errors import ConfigError, ResourceError
from virnucflow.models.attention import ALL_BACKENDS
from virnucflow.models.dnabert_s import DNABERTS, DNABERTSConfig
from virnucflow.models.esm2 import ESM2, ESM2Config, PAD, tokenize
from virnucflow.models.packing import make_packed, make_padded, packing_efficiency, plan_packed, plan_padded
from virnucflow.models.random_weights import init_random
from workloads.frames import mixed_frames

TOL = 1e-5


@pytest.fixture(scope="module")
def esm():
    m = ESM2(ESM2Config(3, 64, 4))
    init_random(m, 0)
    return m.eval()


@pytest.fixture(scope="module")
def dnabert():
    m = DNABERTS(DNABERTSConfig(vocab_size=64, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=96))
    init_random(m, 1)
    m.tokenizer = SimpleNamespace(pad_id=3)  # the token arrays below are made directly
    return m.eval()


@pytest.fixture(scope="module")
def esm_tokens():
    _, aas = mixed_frames(40, seed=3, high=300)
    return [tokenize(a) for a in aas]


@pytest.fixture(scope="module")
def dna_tokens():
    rng = np.random.default_rng(4)
    return [np.concatenate([[1], rng.integers(5, 64, int(k)), [2]]) for k in rng.integers(1, 200, 40)]


def _run(model, tokens, **opts):
    import copy

    e = Embedder.create(copy.deepcopy(model), EmbedOptions.defaults(device="cpu", **opts))
    return e.embed_tokens(tokens), e


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("kind", ["esm2", "dnabert_s"])
def test_every_precision_packing_attention_combination_runs(request, kind):
    """Every precision x packing x attention combination runs on the CPU and gives the FP32
    reference within its precision's tolerance: FP32 1e-5 (summation order); FP16 and BF16
    at most twice the error of the reference path in the same dtype (flash-attention's
    criterion) and cosine > 0.999. FP16 runs as FP32 on the CPU unless fp16_on_cpu asks for it."""
    model = request.getfixturevalue("esm" if kind == "esm2" else "dnabert")
    tokens = request.getfixturevalue("esm_tokens" if kind == "esm2" else "dna_tokens")
    ref, _ = _run(model, tokens, precision="fp32", packing=False, attention="math")
    used = set()
    combos = [(p, pk, a, p == "fp16" and on_cpu) for p, pk, a in itertools.product(("fp16", "bf16", "fp32"), (True, False), ALL_BACKENDS)
              for on_cpu in ((False, True) if p == "fp16" else (False,))]
    for precision, packing, attention, fp16_on_cpu in combos:
        vec, e = _run(model, tokens, precision=precision, packing=packing, attention=attention, token_budget=1024,
                      fp16_on_cpu=fp16_on_cpu)
        used.add((e.precision.name, e.packed, e.backend))
        assert np.isfinite(vec).all()
        if e.precision.name == "fp32":
            assert np.abs(vec - ref).max() < TOL, (precision, packing, attention)
        else:
            slow, _ = _run(model, tokens, precision=precision, packing=False, attention="math", fp16_on_cpu=fp16_on_cpu)
            assert np.abs(vec - ref).max() <= 2 * np.abs(slow - ref).max(), (precision, packing, attention)
            assert _cos(vec, ref).min() > 0.999, (precision, packing, attention)
    # on the CPU: packed runs SDPA, padded math or SDPA; fp16 as asked only with fp16_on_cpu
    assert used == {(p, True, "sdpa") for p in ("fp16", "bf16", "fp32")} | {
        (p, False, b) for p in ("fp16", "bf16", "fp32") for b in ("math", "sdpa")}


@pytest.mark.parametrize("kind", ["esm2", "dnabert_s"])
def test_result_does_not_depend_on_batch_mates(request, kind):
    model = request.getfixturevalue("esm" if kind == "esm2" else "dnabert")
    tokens = request.getfixturevalue("esm_tokens" if kind == "esm2" else "dna_tokens")
    a, _ = _run(model, tokens, precision="fp32", token_budget=512)
    perm = np.random.default_rng(0).permutation(len(tokens))
    b, _ = _run(model, [tokens[i] for i in perm], precision="fp32", token_budget=4096)
    assert np.abs(a - b[np.argsort(perm)]).max() < TOL


def test_cross_sequence_attention_is_caught(esm, esm_tokens, monkeypatch):
    """The equivalence checks can fail: packing without the block-diagonal mask (the
    cross-contamination bug of the v2 rewrite's "disable packing" mode) is caught."""
    import torch.nn.functional as F

    import virnucflow.models.esm2 as esm2_module

    class Unmasked:  # every packed token attends to every other one
        def __init__(self, backend, batch, heads):
            pass

        def __call__(self, q, k, v, scale):
            out = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q, k, v)), scale=scale)
            return out.transpose(0, 1)

    tokens = esm_tokens[:6]
    with torch.no_grad():
        ref = esm.embed(make_padded(tokens, np.arange(6), PAD), "math")
        good = esm.embed(make_packed(tokens, np.arange(6)), "sdpa")
        monkeypatch.setattr(esm2_module, "PackedAttention", Unmasked)
        bad = esm.embed(make_packed(tokens, np.arange(6)), "sdpa")
    assert (good - ref).abs().max() < TOL
    assert (bad - ref).abs().amax(dim=1).min() > 1e-2  # every sequence is contaminated


def test_dedup_embeds_each_sequence_once(tmp_path, monkeypatch):
    from virnucflow.steps.demo import build_demo_models
    from virnucflow.models.manifest import check_models
    from virnucflow.steps.shard import SHARD_HEADER

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    check_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth", "download": False},
                 tmp_path / "m.json")
    nts, aas = mixed_frames(10, seed=5, high=120)
    rows = [(i, f"s{i}_chunk_1F1", nts[i % 4], aas[i % 4]) for i in range(12)]  # 4 distinct, 3 copies each
    (tmp_path / "shard.tsv").write_text(SHARD_HEADER + "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in rows))
    out = {}
    for use in (True, False):
        stats = embed_shard("esm2", tmp_path / "m.json", tmp_path / "shard.tsv", tmp_path / f"{use}.h5",
                            EmbedOptions.defaults(device="cpu", dedup=use))
        with h5py.File(tmp_path / f"{use}.h5") as h5:
            out[use] = h5["embeddings"][()]
            attrs = dict(h5.attrs)
        assert stats.unique_sequences == (4 if use else 12)
    assert stats.dedup_saving == 0
    assert np.array_equal(out[True], out[False])
    assert attrs["precision"] == "fp32" and attrs["precision_requested"] == "fp16" and attrs["attention"] == "sdpa"
    assert bool(attrs["demo_model"]) is True


def test_one_job_embeds_both_models_as_two_jobs_would(tmp_path):
    """embed_shard_models (rule embed: one process, the later models' files read ahead) writes, per
    model, exactly what embed_shard alone writes: vectors, ids and the non-finite table, bit for bit;
    and each model keeps its own options (here dnabert_s padded, esm2 packed)."""
    from virnucflow.steps.demo import build_demo_models
    from virnucflow.models.manifest import check_models
    from virnucflow.steps.shard import SHARD_HEADER

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    check_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth", "download": False},
                 tmp_path / "m.json")
    nts, aas = mixed_frames(12, seed=9, high=150)
    rows = [(i, f"s{i}_chunk_1F1", nts[i], aas[i]) for i in range(12)]
    (tmp_path / "shard.tsv").write_text(SHARD_HEADER + "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in rows))
    opts = {"dnabert_s": EmbedOptions.defaults(device="cpu", packing=False), "esm2": EmbedOptions.defaults(device="cpu")}
    models = {"dnabert_s": tmp_path / "m.json", "esm2": tmp_path / "m.json"}
    stats = embed_shard_models(models, tmp_path / "shard.tsv", {m: tmp_path / f"both_{m}.h5" for m in opts}, opts,
                               nonfinite_outs={m: tmp_path / f"both_{m}.tsv" for m in opts})
    assert list(stats) == ["dnabert_s", "esm2"] and all(s.sequences == 12 for s in stats.values())
    for st in stats.values():  # the load's parts, for finding where a job's start-up goes (logged and in the file)
        parts = [st.seconds_read, st.seconds_prepare, st.seconds_warm_up, st.seconds_tokenise_wait]
        assert min(parts) >= 0 and sum(parts) == pytest.approx(st.seconds_load, abs=1e-9)
    for m in opts:
        embed_shard(m, tmp_path / "m.json", tmp_path / "shard.tsv", tmp_path / f"alone_{m}.h5", opts[m],
                    nonfinite_out=tmp_path / f"alone_{m}.tsv")
        with h5py.File(tmp_path / f"both_{m}.h5") as both, h5py.File(tmp_path / f"alone_{m}.h5") as alone:
            assert np.array_equal(both["embeddings"][()], alone["embeddings"][()])
            assert json.loads(both.attrs["stats"])["seconds_read"] == stats[m].seconds_read
            assert list(both["ids"][()]) == list(alone["ids"][()]) == [f"s{i}_chunk_1F1".encode() for i in range(12)]
            assert both.attrs["model_kind"] == m and bool(both.attrs["packing"]) is (m == "esm2")
        assert (tmp_path / f"both_{m}.tsv").read_text() == (tmp_path / f"alone_{m}.tsv").read_text()
    assert read_ahead([tmp_path / "e.pt", tmp_path / "d", tmp_path / "missing"]) == (
        (tmp_path / "e.pt").stat().st_size + sum(f.stat().st_size for f in (tmp_path / "d").rglob("*") if f.is_file()))
    with pytest.raises(ValueError, match="must name the same models"):
        embed_shard_models(models, tmp_path / "shard.tsv", {"esm2": tmp_path / "x.h5"}, opts,
                           nonfinite_outs={m: tmp_path / f"x_{m}.tsv" for m in opts})


class _OOMAbove:
    """A model that runs out of memory on batches of more than ``n`` sequences."""

    def __init__(self, model, n):
        self.model, self.n = model, n

    def __getattr__(self, name):  # everything else is the model's
        return getattr(self.model, name)

    def embed(self, batch, backend):
        if len(batch.items) > self.n:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model.embed(batch, backend)


def test_out_of_memory_batches_are_split(esm, esm_tokens):
    base = Embedder(esm, torch.device("cpu"), kernels_precision(), True, "sdpa", token_budget=4096)
    ref = base.embed_tokens(esm_tokens)
    stats = EmbedStats()
    oom = Embedder(_OOMAbove(esm, 3), torch.device("cpu"), kernels_precision(), True, "sdpa", token_budget=4096)
    got = oom.embed_tokens(esm_tokens, stats)
    assert stats.oom_splits > 0
    assert np.abs(got - ref).max() < TOL
    single = Embedder(_OOMAbove(esm, 0), torch.device("cpu"), kernels_precision(), True, "sdpa")
    with pytest.raises(ResourceError, match=r"^out of GPU memory embedding one sequence of \d+ tokens with esm2"):
        single.embed_tokens(esm_tokens[:2])


def kernels_precision():
    from virnucflow.models.precision import Precision

    return Precision("fp32", "fp32")


def test_packing_plans():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, 2000)
    bins = plan_packed(lengths, 4096)
    assert sorted(np.concatenate(bins).tolist()) == list(range(2000))  # every sequence exactly once
    assert all(lengths[b].sum() <= 4096 for b in bins)
    assert packing_efficiency(lengths, bins, 4096, padded=False) > 0.98
    padded = plan_padded(lengths, 4096)
    assert all(len(b) * lengths[b].max() <= 4096 for b in padded)
    assert plan_packed([5000, 10], 4096)[0].tolist() == [0]  # longer than the budget: its own batch


def test_packed_batch_refuses_a_padded_only_backend(esm, esm_tokens):
    batch = make_packed(esm_tokens[:3], np.arange(3))
    with pytest.raises(ValueError, match="'math' is not a packed attention backend"):
        esm.embed(batch, "math")


def test_dedup_helper():
    unique, inverse = dedup(["AC", "GG", "AC", "T", "GG"])
    assert unique == ["AC", "GG", "T"] and inverse.tolist() == [0, 1, 0, 2, 1]


def test_progress_lines_count_finished_sequences(tmp_path, monkeypatch, caplog):
    import logging

    import virnucflow.planning.progress as progress
    from virnucflow.steps.demo import build_demo_models
    from virnucflow.models.manifest import check_models
    from virnucflow.steps.shard import SHARD_HEADER

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    check_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth", "download": False},
                 tmp_path / "m.json")
    nts, aas = mixed_frames(40, seed=6, high=200)
    (tmp_path / "s.tsv").write_text(SHARD_HEADER + "".join(f"{i}\ts{i}_chunk_1F1\t{nts[i]}\t{aas[i]}\n" for i in range(40)))
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # a line after every batch
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        stats = embed_shard("esm2", tmp_path / "m.json", tmp_path / "s.tsv", tmp_path / "o.h5",
                            EmbedOptions.defaults(device="cpu", token_budget=512))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress ")]
    assert len(lines) == stats.batches > 1
    parsed = [progress.parse_progress(line) for line in lines]
    assert [p.total for p in parsed] == [40] * len(lines)
    assert [p.done for p in parsed] == sorted(p.done for p in parsed) and parsed[-1].done == 40
    assert parsed[-1].label == str(tmp_path / "s.tsv") and parsed[-1].model == "esm2" and parsed[-1].eta_seconds == 0
    # the final summary line, with the load's parts
    last = caplog.records[-1].getMessage()
    assert last.startswith(f"esm2 {tmp_path / 's.tsv'}: 40 sequences (40 unique")
    assert re.search(r": load \d+\.\d s \(read \d+\.\d, prepare \d+\.\d, warm-up \d+\.\d, tokenising \d+\.\d more\), "
                     r"compute \d+\.\d s, \d+ tokens/s$", last), last


@pytest.mark.parametrize("kind", ["esm2", "dnabert_s"])
def test_fp8_on_the_cpu(request, kind):
    """precision fp8: every linear layer becomes E4M3 (per-channel weight scales, per-token
    activation scales; on the CPU the products run from the dequantised values). E4M3 keeps
    3 mantissa bits (relative rounding up to 2**-4 per value), so pooled vectors agree with
    FP32 by cosine, not digits: > 0.99 for these random-weight models. Without fp16_on_cpu it
    runs in fp32 like fp16 does. DNABERT-S refuses it."""
    from virnucflow.models.fp8 import Fp8Linear

    model = request.getfixturevalue("esm" if kind == "esm2" else "dnabert")
    tokens = request.getfixturevalue("esm_tokens" if kind == "esm2" else "dna_tokens")
    if not model.fp8:  # DNABERT-S (see its class)
        with pytest.raises(ConfigError, match=r"^precision fp8 is not offered for dnabert_s: give it per model, "
                                              r"e.g. embedding: \{esm2: \{precision: fp8\}\}$"):
            _run(model, tokens, precision="fp8", fp16_on_cpu=True)
        return
    ref, _ = _run(model, tokens, precision="fp32", packing=False, attention="math")
    vec, e = _run(model, tokens, precision="fp8", fp16_on_cpu=True)
    assert e.precision.name == "fp8"
    linears = [m for m in e.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [] and sum(isinstance(m, Fp8Linear) for m in e.model.modules()) > 0
    assert all(layer.fc2.activation == "gelu" and isinstance(layer.act, torch.nn.Identity) for layer in e.model.layers)
    cos = _cos(vec, ref)
    assert np.isfinite(vec).all() and cos.min() > 0.99, cos.min()
    assert np.abs(vec - ref).max() > 1e-3  # it did run in FP8
    _, e32 = _run(model, tokens, precision="fp8")
    assert (e32.precision.name, e32.precision.requested) == ("fp32", "fp8")


def test_the_fused_switch_reaches_the_model_and_its_fp8_layers(esm):
    """``embedding.fused`` (default true in the schema) is set on ESM-2 by the engine, and under
    FP8 on every quantised linear (its row quantisation kernel); the FP32 reference never fuses."""
    import copy

    from virnucflow.models.fp8 import Fp8Linear

    opts = EmbedOptions.defaults(device="cpu")
    assert opts.fused is True and opts.reference().fused is False
    for fused in (True, False):
        e = Embedder.create(copy.deepcopy(esm), EmbedOptions.defaults(device="cpu", fused=fused))
        assert e.model.fused is fused
        e8 = Embedder.create(copy.deepcopy(esm), EmbedOptions.defaults(device="cpu", fused=fused, precision="fp8",
                                                                       fp16_on_cpu=True))
        layers = [m for m in e8.model.modules() if isinstance(m, Fp8Linear)]
        assert layers and all(m.fused is fused for m in layers) and e8.model.fused is fused
