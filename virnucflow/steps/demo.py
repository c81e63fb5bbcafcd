"""Tiny demo models in the real file formats, built deterministically from a seed.

- ESM-2: a fair-esm checkpoint (``{"cfg": {"model": Namespace(...)}, "model":
  state_dict}``, keys prefixed ``encoder.sentence_encoder.``, LM head included)
  of a 2-layer, 32-wide model;
- DNABERT-S: a Hugging Face ``BertModel`` directory (``config.json``,
  ``pytorch_model.bin`` without prefix, ``tokenizer.json``: a BPE tokenizer
  trained on DNA with DNABERT-S's special tokens, post-processor, and its
  stored padding/truncation to 2000) of a 2-layer, 48-wide, 6-head model;
- classifier: the original's layout, a whole ``MLPClassifier`` module pickled
  from ``__main__``, taking 48 + 32 = 80 features.

Every file is marked ``virnucflow_demo``, and every output computed with them
says that demo models were used: their predictions mean nothing.

The same builders make full-size random models (for GPU benchmarks) and
files of any size for tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from virnucflow.io.atomic import atomic_outputs
from virnucflow.models.classifier import MLPClassifier
from virnucflow.models.dnabert_s import DNABERTS, DNABERTSConfig
from virnucflow.models.esm2 import ESM2, ESM2Config
from virnucflow.models.checkpoints import dnabert_s_to_checkpoint
from virnucflow.models.random_weights import init_random

DEMO_ESM = ESM2Config(num_layers=2, embed_dim=32, attention_heads=4, name="virnucflow_demo_esm2")
DEMO_DNABERT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=96)
DEMO_CLASSIFIER_HIDDEN = 16
SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


# --------------------------------------------------------------------------- ESM-2


def fair_esm_lm_head(model: ESM2, seed: int) -> dict[str, torch.Tensor]:
    """LM-head tensors with fair-esm's names (present in real files, unused here).

    fair-esm ties ``lm_head.weight`` to ``embed_tokens.weight``; so do we.
    """
    g = torch.Generator().manual_seed(seed + 1)
    e, v = model.cfg.embed_dim, model.cfg.vocab_size
    return {
        "lm_head.dense.weight": torch.randn(e, e, generator=g) / e**0.5,
        "lm_head.dense.bias": torch.zeros(e),
        "lm_head.layer_norm.weight": torch.ones(e),
        "lm_head.layer_norm.bias": torch.zeros(e),
        "lm_head.weight": model.embed_tokens.weight.detach(),
        "lm_head.bias": torch.zeros(v),
    }


def save_fair_esm(model: ESM2, path: str | Path, demo: bool = False, seed: int = 0) -> None:
    """Write ``model`` as a fair-esm checkpoint file."""
    c = model.cfg
    cfg = argparse.Namespace(
        encoder_layers=c.num_layers, encoder_embed_dim=c.embed_dim, encoder_ffn_embed_dim=c.ffn_dim,
        encoder_attention_heads=c.attention_heads, token_dropout=c.token_dropout,
    )
    if demo:
        cfg.virnucflow_demo = True
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()}
    state.update({f"encoder.{k}": v for k, v in fair_esm_lm_head(model, seed).items()})
    with atomic_outputs([path]) as (tmp,):
        torch.save({"cfg": {"model": cfg}, "model": state}, tmp)


def random_esm2(config: ESM2Config, seed: int) -> ESM2:
    model = ESM2(config)
    init_random(model, seed)
    return model.eval()


# --------------------------------------------------------------------------- DNABERT-S


def demo_dna_corpus(seed: int) -> list[str]:
    """DNA to train the demo tokenizer on: the bundled lambda contigs plus random sequence."""
    rng = np.random.default_rng(seed)
    corpus = ["".join(rng.choice(list("ACGT"), 2000)) for _ in range(20)]
    from virnucflow.layout import share

    lam = share() / "resources" / "demo" / "lambda_contigs.fa"
    if lam.is_file():
        corpus += [line.strip() for line in lam.read_text().splitlines() if line and not line.startswith(">")]
    return corpus


def train_dna_tokenizer(corpus: list[str], vocab_size: int = 128):
    """A BPE tokenizer laid out like DNABERT-S's tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=list("ACGT"), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    # DNABERT-S's published file stores these; loaders must switch them off.
    tok.enable_truncation(2000)
    tok.enable_padding(length=2000, pad_id=3, pad_token="[PAD]")
    return tok


def save_dnabert_dir(model: DNABERTS, directory: str | Path, tokenizer, demo: bool = False, safetensors: bool = False) -> None:
    """Write ``model`` as a Hugging Face DNABERT-S directory."""
    c = model.cfg
    config = {
        "_name_or_path": "zhihan1996/DNABERT-2-117M", "alibi_starting_size": 512, "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": c.hidden_size, "initializer_range": 0.02, "intermediate_size": c.intermediate_size,
        "layer_norm_eps": c.layer_norm_eps, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": c.num_attention_heads, "num_hidden_layers": c.num_hidden_layers, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "type_vocab_size": c.type_vocab_size,
        "vocab_size": c.vocab_size,
    }
    if demo:
        config["virnucflow_demo"] = True
    with atomic_outputs([directory]) as (tmp,):
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.contiguous() for k, v in dnabert_s_to_checkpoint(model.state_dict()).items()}
        if safetensors:
            from safetensors.torch import save_file

            save_file(state, str(tmp / "model.safetensors"))
        else:
            torch.save(state, tmp / "pytorch_model.bin")
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}) + "\n")
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}) + "\n")


def random_dnabert(config: DNABERTSConfig, seed: int) -> DNABERTS:
    model = DNABERTS(config)
    init_random(model, seed)
    return model.eval()


# --------------------------------------------------------------------------- classifier


def save_original_classifier(model: MLPClassifier, path: str | Path, demo: bool = False) -> None:
    """Pickle the whole module as the original's train.py did: class ``__main__.MLPClassifier``."""
    main = sys.modules["__main__"]
    cls = type("MLPClassifier", (MLPClassifier,), {"__module__": "__main__", "__qualname__": "MLPClassifier"})
    clone = cls(model.input_dim, model.hidden_layer.out_features, 2)
    clone.load_state_dict(model.state_dict())
    if demo:
        clone.virnucflow_demo = True
    had = getattr(main, "MLPClassifier", None)
    main.MLPClassifier = cls
    try:
        with atomic_outputs([path]) as (tmp,):
            torch.save(clone.eval(), tmp)
    finally:
        if had is None:
            del main.MLPClassifier
        else:
            main.MLPClassifier = had


def random_classifier(input_dim: int, hidden: int, seed: int) -> MLPClassifier:
    g = torch.Generator().manual_seed(seed)
    model = MLPClassifier(input_dim, hidden, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5 if p.ndim == 2 else 10))
        model.bn1.running_mean.copy_(torch.randn(hidden, generator=g) * 0.1)
        model.bn1.running_var.copy_(torch.rand(hidden, generator=g) + 0.5)
    return model.eval()


# --------------------------------------------------------------------------- entry points


def build_demo_esm2(path: str | Path, seed: int = 0) -> int:
    """The demo ESM-2 (a fair-esm file); returns its width."""
    save_fair_esm(random_esm2(DEMO_ESM, seed), path, demo=True, seed=seed)
    return DEMO_ESM.embed_dim


def build_demo_dnabert_s(directory: str | Path, seed: int = 0) -> int:
    """The demo DNABERT-S (a Hugging Face directory with its tokenizer); returns its width."""
    tokenizer = train_dna_tokenizer(demo_dna_corpus(seed))
    dn_cfg = DNABERTSConfig(vocab_size=tokenizer.get_vocab_size(), name="virnucflow_demo_dnabert", **DEMO_DNABERT)
    save_dnabert_dir(random_dnabert(dn_cfg, seed + 1), directory, tokenizer, demo=True)
    return DEMO_DNABERT["hidden_size"]


def build_demo_models(paths: Mapping[str, str | Path], seed: int = 0) -> None:
    """Every registered model's demo (``paths``: model name -> where, ``classifier`` included), then a
    classifier as wide as their widths added up."""
    from virnucflow.models.registry import embedding_models

    torch.manual_seed(seed)
    width = sum(spec.build_demo(paths[spec.name], seed) for spec in embedding_models())
    save_original_classifier(random_classifier(width, DEMO_CLASSIFIER_HIDDEN, seed + 2), paths["classifier"], demo=True)
