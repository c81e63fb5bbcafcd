"""ESM-2 and DNABERT-S in our code against independent references, in FP32.

References: fair-esm's own ``esm.model.esm2.ESM2`` and alphabet, transformers'
``EsmModel`` (for the Hugging Face layout), and the published DNABERT-2 facts
(ALiBi slope order, state-dict layout). Tolerances: 1e-5 max abs difference in
FP32, where two implementations of the same arithmetic differ only by
summation order (observed ~1e-6). The equivalence tests run on the CPU and,
where CUDA is available, again on the GPU (``device`` parameter, marked gpu;
TF32 is off so that FP32 matrix products stay FP32).
"""

from __future__ import annotations

import json
import math

import esm
import numpy as np
import pytest
import torch
from esm.model.esm2 import ESM2 as FairESM2

from virnucflow.steps.demo import random_dnabert, random_esm2, save_dnabert_dir, save_fair_esm, train_dna_tokenizer
from virnucflow.models.attention import alibi_slopes
from virnucflow.models.checkpoints import dnabert_s_to_checkpoint, load_dnabert_s, load_esm2
from workloads.published import fair_to_hf_esm
from virnucflow.models.dnabert_s import DNABERTSConfig
from virnucflow.models.esm2 import ALPHABET, ESM2, ESM2Config, PAD, tokenize
from virnucflow.models.packing import make_packed, make_padded

AMINO = list("ACDEFGHIKLMNPQRSTVWY")
TOL = 1e-5


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(request.param)


def _proteins(n, seed, low=1, high=300):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AMINO, int(k))) for k in rng.integers(low, high, n)]


@pytest.fixture(scope="module")
def alphabet():
    return esm.data.Alphabet.from_architecture("ESM-1b")


def _fair_and_ours(alphabet, layers, dim, heads, seed, device="cpu"):
    torch.manual_seed(seed)
    fair = FairESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet, token_dropout=True).eval()
    ours = ESM2(ESM2Config(layers, dim, heads)).eval()
    state = {k: v for k, v in fair.state_dict().items() if not k.startswith(("lm_head", "contact_head"))}
    ours.load_state_dict(state, strict=True)  # fair-esm's names, unchanged
    return fair.to(device), ours.to(device)


def test_alphabet_and_tokens_match_fair_esm(alphabet):
    assert alphabet.all_toks == ALPHABET
    conv = alphabet.get_batch_converter()
    seqs = _proteins(5, 0)
    _, _, toks = conv([(str(i), s) for i, s in enumerate(seqs)])
    ours = make_padded([tokenize(s) for s in seqs], np.arange(5), PAD).tokens
    assert torch.equal(ours, toks)


@pytest.mark.parametrize("layers,dim,heads", [(6, 320, 20), (12, 480, 20)], ids=["t6_8M", "t12_35M"])
def test_esm2_final_layer_matches_fair_esm(alphabet, layers, dim, heads, device):
    fair, ours = _fair_and_ours(alphabet, layers, dim, heads, seed=layers, device=device)
    seqs = _proteins(9, layers, 1, 400)  # mixed lengths: padded batches
    _, _, toks = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(seqs)])
    toks = toks.to(device)
    batch = make_padded([tokenize(s) for s in seqs], np.arange(len(seqs)), PAD).to(device)
    with torch.no_grad():
        ref = fair(toks, repr_layers=[layers])["representations"][layers]
        got = ours.forward_padded(batch, "math")
        packed = make_packed([tokenize(s) for s in seqs], np.arange(len(seqs))).to(device)
        got_packed = ours.forward_packed(packed, "sdpa")
    mask = batch.mask
    assert (got - ref)[mask].abs().max() < TOL
    rows = torch.cat([ref[i, : len(s) + 2] for i, s in enumerate(seqs)])
    assert (got_packed - rows).abs().max() < TOL
    # the comparison is not trivial: the layers change the embeddings a lot
    assert (ref - fair.embed_tokens(toks))[mask].abs().max() > 1.0


def test_esm2_layer_reads_on_its_own(alphabet, device):
    """One TransformerLayer.forward against fair-esm's layer: (hidden, residual) sum to its output."""
    from virnucflow.models.attention import PaddedAttention

    fair, ours = _fair_and_ours(alphabet, 2, 64, 4, seed=11, device=device)
    x = torch.randn(3, 17, 64, generator=torch.Generator().manual_seed(0)).to(device)  # (B, L, E)
    mask = torch.ones(3, 17, dtype=torch.bool, device=device)
    with torch.no_grad():
        ref, _ = fair.layers[1](x.transpose(0, 1))  # fair-esm is (L, B, E)
        rotary = ours._rotary_tables(torch.arange(17, device=device))[1]
        hidden, residual = ours.layers[1](x, None, rotary, PaddedAttention("math", mask), packed=False)
        # the same layer, entered with the stream split into (hidden, residual) as a previous layer leaves it
        hidden2, residual2 = ours.layers[1](x - 1.0, torch.ones_like(x), rotary, PaddedAttention("math", mask), packed=False)
    assert (hidden + residual - ref.transpose(0, 1)).abs().max() < TOL
    assert (hidden2 + residual2 - ref.transpose(0, 1)).abs().max() < TOL
    assert (ref.transpose(0, 1) - x).abs().max() > 0.1  # the layer does change its input


def test_esm2_pooling_matches_original_extract_esm(alphabet, device):
    """VirNucPro's extract_esm: fair-esm batches, ``t[i, 1:min(1024, L)+1].mean(0)``."""
    fair, ours = _fair_and_ours(alphabet, 6, 320, 20, seed=1, device=device)
    seqs = _proteins(6, 2, 5, 200) + ["".join(np.random.default_rng(3).choice(AMINO, 1100))]  # > 1024 residues
    ds = esm.data.FastaBatchedDataset([str(i) for i in range(len(seqs))], seqs)
    expected = {}
    with torch.no_grad():
        for b in ds.get_batch_indices(2048, extra_toks_per_seq=1):
            labels, strs, toks = alphabet.get_batch_converter()([ds[i] for i in b])
            rep = fair(toks.to(device), repr_layers=[6])["representations"][6]
            for i, (label, s) in enumerate(zip(labels, strs)):
                expected[int(label)] = rep[i, 1 : min(1024, len(s)) + 1].mean(0)
        tokens = [tokenize(s) for s in seqs]
        packed = ours.embed(make_packed(tokens, np.arange(len(seqs))).to(device), "sdpa")
        padded = ours.embed(make_padded(tokens, np.arange(len(seqs)), PAD).to(device), "math")
    exp = torch.stack([expected[i] for i in range(len(seqs))])
    assert (packed - exp).abs().max() < TOL
    assert (padded - exp).abs().max() < TOL


def test_fair_esm_file_and_hf_directory_give_identical_outputs(tmp_path, device):
    from safetensors.torch import save_file
    from transformers import EsmConfig, EsmModel

    cfg = ESM2Config(3, 64, 4)
    model = random_esm2(cfg, 5)
    save_fair_esm(model, tmp_path / "esm2_t3_test.pt")
    # Hugging Face EsmForMaskedLM layout: "esm." prefix, per-layer rotary frequencies
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({
        "model_type": "esm", "architectures": ["EsmForMaskedLM"], "hidden_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 33, "token_dropout": True,
        "position_embedding_type": "rotary", "emb_layer_norm_before": False, "layer_norm_eps": 1e-5,
        "mask_token_id": 32, "pad_token_id": 1, "max_position_embeddings": 1026}))
    save_file({k: v.contiguous() for k, v in fair_to_hf_esm(model.state_dict(), prefix="esm.").items()},
              str(hf_dir / "model.safetensors"))
    from_file, meta_file = load_esm2(tmp_path / "esm2_t3_test.pt")
    from_dir, meta_dir = load_esm2(hf_dir)
    assert (meta_file["format"], meta_dir["format"]) == ("fair-esm", "huggingface")
    from_file, from_dir = from_file.to(device), from_dir.to(device)
    seqs = _proteins(5, 9, 3, 120)
    batch = make_packed([tokenize(s) for s in seqs], np.arange(5)).to(device)
    with torch.no_grad():
        a = from_file.embed(batch, "sdpa")
        b = from_dir.embed(batch, "sdpa")
    assert torch.equal(a, b)
    # and transformers' own EsmModel reads the same directory to the same numbers
    hf = EsmModel(EsmConfig(**json.loads((hf_dir / "config.json").read_text())), add_pooling_layer=False).eval()
    from safetensors.torch import load_file

    hf.load_state_dict({k.removeprefix("esm."): v for k, v in load_file(str(hf_dir / "model.safetensors")).items()}, strict=False)
    hf = hf.to(device)
    padded = make_padded([tokenize(s) for s in seqs], np.arange(5), PAD).to(device)
    with torch.no_grad():
        h = hf(input_ids=padded.tokens, attention_mask=padded.mask.long()).last_hidden_state
        o = from_dir.forward_padded(padded, "math")
    assert (h - o)[padded.mask].abs().max() < TOL


def test_fair_esm_loader_reads_our_checkpoint_format(tmp_path):
    """fair-esm's own loading code accepts the files we write (format check)."""
    model = random_esm2(ESM2Config(2, 32, 4), 1)
    save_fair_esm(model, tmp_path / "esm2_t2_demo.pt")
    data = torch.load(tmp_path / "esm2_t2_demo.pt", weights_only=False)
    fair, _ = esm.pretrained.load_model_and_alphabet_core("esm2_t2_demo", data, None)
    ours_state = model.state_dict()
    for k, v in fair.state_dict().items():
        if k in ours_state:
            assert torch.equal(v, ours_state[k]), k


def test_inv_freq_is_read_from_the_checkpoint(tmp_path):
    model = random_esm2(ESM2Config(2, 32, 4), 2)
    with torch.no_grad():
        for layer in model.layers:  # FP16-rounded, as in the published checkpoints
            layer.self_attn.rot_emb.inv_freq.copy_(layer.self_attn.rot_emb.inv_freq.half().float())
    save_fair_esm(model, tmp_path / "m.pt")
    loaded, _ = load_esm2(tmp_path / "m.pt")
    assert torch.equal(loaded.layers[1].self_attn.rot_emb.inv_freq, model.layers[1].self_attn.rot_emb.inv_freq)


# --------------------------------------------------------------------------- DNABERT-S


def test_alibi_slopes_match_dnabert2_list():
    published = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                 2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]
    assert alibi_slopes(12) == pytest.approx(published, rel=1e-12)
    assert alibi_slopes(8) == [0.5**i for i in range(1, 9)]


@pytest.fixture(scope="module")
def small_dnabert():
    return random_dnabert(DNABERTSConfig(vocab_size=64, hidden_size=96, num_hidden_layers=3, num_attention_heads=12,
                                        intermediate_size=192), 7)


def _dna_tokens(n, seed, vocab=64):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[1], rng.integers(5, vocab, int(k)), [2]]) for k in rng.integers(1, 150, n)]


def test_dnabert_padded_batch_equals_each_sequence_alone(small_dnabert, device):
    tokens = _dna_tokens(8, 1)
    model = small_dnabert.to(device)
    with torch.no_grad():
        batch = make_padded(tokens, np.arange(8), pad_id=3).to(device)
        together = model.forward_padded(batch, "math")
        packed = model.forward_packed(make_packed(tokens, np.arange(8)).to(device), "sdpa")
        offset = 0
        for i, t in enumerate(tokens):
            alone = model.forward_padded(make_padded(tokens, np.array([i]), 3).to(device), "math")[0]
            assert (together[i, : len(t)] - alone).abs().max() < TOL
            assert (packed[offset : offset + len(t)] - alone).abs().max() < TOL
            offset += len(t)


def test_dnabert_pooling_includes_cls_and_sep(small_dnabert, device):
    tokens = _dna_tokens(3, 2)
    model = small_dnabert.to(device)
    with torch.no_grad():
        pooled = model.embed(make_packed(tokens, np.arange(3)).to(device), "sdpa")
        for i in range(len(tokens)):
            states = model.forward_padded(make_padded(tokens, np.array([i]), 3).to(device), "math")[0]
            assert (pooled[i] - states.mean(0)).abs().max() < TOL  # original: mean over all tokens


def test_alibi_bias_is_applied(small_dnabert):
    """Moving tokens changes the output only through ALiBi (there are no position embeddings)."""
    small_dnabert.to("cpu")
    t = _dna_tokens(1, 3)[0]
    rev = np.concatenate([[t[0]], t[1:-1][::-1], [t[-1]]])
    with torch.no_grad():
        a = small_dnabert.embed(make_padded([t], np.array([0]), 3), "math")
        b = small_dnabert.embed(make_padded([rev], np.array([0]), 3), "math")
    assert (a - b).abs().max() > 1e-3


# Key names and shapes of the published DNABERT-S pytorch_model.bin: a bare BertModel
# (saved with dnabert2.save_pretrained in MAGICS-LAB/DNABERT_S train/pretrain/training.py)
# whose modules are those of evaluate/model_codes/bert_layers.py (embeddings.*,
# encoder.layer.N.attention.self.Wqkv, ..., pooler.dense); 138 tensors, 117,068,544 values.
def _published_dnabert_keys() -> dict[str, tuple[int, ...]]:
    keys = {
        "embeddings.word_embeddings.weight": (4096, 768),
        "embeddings.token_type_embeddings.weight": (2, 768),
        "embeddings.LayerNorm.weight": (768,),
        "embeddings.LayerNorm.bias": (768,),
        "pooler.dense.weight": (768, 768),
        "pooler.dense.bias": (768,),
    }
    for n in range(12):
        p = f"encoder.layer.{n}."
        keys.update({
            p + "attention.self.Wqkv.weight": (2304, 768), p + "attention.self.Wqkv.bias": (2304,),
            p + "attention.output.dense.weight": (768, 768), p + "attention.output.dense.bias": (768,),
            p + "attention.output.LayerNorm.weight": (768,), p + "attention.output.LayerNorm.bias": (768,),
            p + "mlp.gated_layers.weight": (6144, 768), p + "mlp.wo.weight": (768, 3072), p + "mlp.wo.bias": (768,),
            p + "mlp.layernorm.weight": (768,), p + "mlp.layernorm.bias": (768,),
        })
    return keys


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_published_dnabert_layout_loads_strictly(tmp_path, prefix):
    keys = _published_dnabert_keys()
    assert len(keys) == 138 and sum(math.prod(s) for s in keys.values()) == 117_068_544
    g = torch.Generator().manual_seed(0)
    state = {prefix + k: torch.randn(s, generator=g) * 0.02 for k, s in keys.items()}
    if prefix:  # the MLM checkpoint layout also carries the prediction head
        state["cls.predictions.bias"] = torch.zeros(4096)
    d = tmp_path / "DNABERT-S"
    d.mkdir()
    torch.save(state, d / "pytorch_model.bin")
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12,
                                               "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 4096,
                                               "layer_norm_eps": 1e-12, "type_vocab_size": 2}))
    tok = train_dna_tokenizer(["ACGT" * 50, "GGCCAATT" * 30], vocab_size=64)
    tok.save(str(d / "tokenizer.json"))
    model, meta = load_dnabert_s(d)
    loaded = model.state_dict()
    assert len(loaded) == 138
    assert set(dnabert_s_to_checkpoint(loaded)) == set(keys)  # every tensor, under its role name
    assert torch.equal(loaded["layers.11.mlp.down.weight"], state[prefix + "encoder.layer.11.mlp.wo.weight"])
    assert torch.equal(loaded["layers.0.attn.qkv.bias"], state[prefix + "encoder.layer.0.attention.self.Wqkv.bias"])
    assert meta["config"]["hidden_size"] == 768


def test_tokenizer_adds_cls_sep_and_ignores_stored_padding(tmp_path):
    from virnucflow.models.dnabert_s import DNABERTSTokenizer

    tok = train_dna_tokenizer(["ACGTTGCA" * 100], vocab_size=40)  # stores padding/truncation to 2000
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = DNABERTSTokenizer(tmp_path / "tokenizer.json")
    ids = ours.encode("ACGT" * 1000)
    assert ids[0] == 1 and ids[-1] == 2
    assert 3 not in ids  # no [PAD] to 2000
    assert len(ours.encode("ACGT" * 3000)) > 2000 // 4  # not truncated at 2000 tokens either


def test_demo_dnabert_round_trip(tmp_path):
    tok = train_dna_tokenizer(["ACGT" * 200], vocab_size=48)
    model = random_dnabert(DNABERTSConfig(vocab_size=tok.get_vocab_size(), hidden_size=48, num_hidden_layers=2,
                                         num_attention_heads=6, intermediate_size=96), 3)
    for safetensors in (False, True):
        d = tmp_path / f"dn{safetensors}"
        save_dnabert_dir(model, d, tok, safetensors=safetensors)
        loaded, _ = load_dnabert_s(d)
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k])
