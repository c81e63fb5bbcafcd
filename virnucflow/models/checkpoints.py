"""Reading model files and loading them strictly, for both models.

Formats:

- fair-esm checkpoints (``esm2_t36_3B_UR50D.pt``): ``{"cfg": {"model":
  Namespace(encoder_layers=..., encoder_embed_dim=..., encoder_attention_heads=...,
  token_dropout=...)}, "model": state_dict}`` with keys prefixed
  ``encoder.sentence_encoder.`` (or ``encoder.``), as fair-esm's
  ``upgrade_state_dict`` strips them;
- Hugging Face model directories: ``config.json`` plus ``model.safetensors``,
  ``pytorch_model.bin`` or their sharded ``*.index.json`` forms; ESM-2 as
  ``EsmModel``/``EsmForMaskedLM`` (``facebook/esm2_*``), DNABERT-S as its
  ``BertModel`` (``zhihan1996/DNABERT-S``, keys without prefix; a ``bert.``
  prefix and ``cls.*`` MLM head are accepted too).

Everything is read with ``torch.load(weights_only=True)`` (the only non-tensor
global allowed is ``argparse.Namespace`` for fair-esm's config) or
safetensors, memory-mapped where possible. Models are built on the meta device
and the file's tensors assigned, so a 3B checkpoint is never copied in host
memory. Any missing, unexpected or mis-shaped key is an error naming the file
and the keys: a model is never half loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import ModelFileError, short
from .dnabert_s import CHECKPOINT_NAMES as DNABERT_S_NAMES
from .dnabert_s import DNABERTS, DNABERTSConfig
from .esm2 import ESM2, ESM2Config

log = logging.getLogger("virnucflow")
_MAX_LISTED = 5
# Heads that the published files carry but embeddings do not use.
ESM_UNUSED = re.compile(r"^(lm_head\.|contact_head\.|pooler\.|embeddings\.position_embeddings\.|embeddings\.position_ids)")
DNABERT_UNUSED = re.compile(r"^(cls\.)")


# --------------------------------------------------------------------------- raw files


def load_torch_file(path: Path, extra_globals: list | None = None) -> object:
    """``torch.load`` with weights_only=True, memory-mapped when the format allows."""
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    globals_ = extra_globals or []
    errors = (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError)
    try:
        with torch.serialization.safe_globals(globals_):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path}: refused to load: {_refusal(path, exc)}") from None
    except errors as exc:
        raise ModelFileError(f"{path}: truncated or not a PyTorch checkpoint ({short(exc)})") from None



def _refusal(path: Path, exc: BaseException) -> str:
    """Why the weights-only unpickler refused ``path``, in our words (not PyTorch's advice to
    unpickle it unsafely, which users must not follow for a file they did not expect)."""
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - only for the message
        names = []
    if not names:
        return f"not a plain tensor checkpoint ({short(exc).split('. ')[0]})"
    what = ("it is a pickled Python module (a VirNucPro classifier .pth?), not model weights"
            if "__main__.MLPClassifier" in names else "it holds pickled Python objects, not only model weights")
    return f"{what}: {', '.join(names[:_MAX_LISTED])}{' ...' if len(names) > _MAX_LISTED else ''}"


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """State dict of a Hugging Face model directory (safetensors or .bin, sharded or not)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as exc:
                raise ModelFileError(f"{index}: not a weight index ({short(exc)})") from None
            state: dict[str, torch.Tensor] = {}
            for name in files:
                state.update(_read_weight_file(directory / name))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return _read_weight_file(directory / name)
    raise ModelFileError(
        f"{directory}: no weights found (expected model.safetensors, pytorch_model.bin or a sharded index)"
    )


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ModelFileError(f"{path}: file not found")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: truncated or not a safetensors file ({short(exc)})") from None
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path}: not a state dict of tensors")
    return dict(obj)


def read_hf_config(directory: Path) -> dict:
    cfg = directory / "config.json"
    if not cfg.is_file():
        raise ModelFileError(f"{directory}: not a Hugging Face model directory (no config.json)")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{cfg}: not valid JSON ({short(exc)})") from None


# --------------------------------------------------------------------------- strict loading


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Raise :class:`ModelFileError` unless ``got`` has exactly ``expected``'s keys and shapes."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {list(got[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", shapes)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED]) + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise ModelFileError(f"{source}: weights do not match {what}: " + "; ".join(problems))


class _SkipInit(torch.overrides.TorchFunctionMode):
    """``torch.nn.init`` initialisers do nothing: on the meta device they only cost time (their
    meta implementations import torch._dynamo, seconds of every model check and load)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


def meta_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` on the meta device, for its shapes or for weights assigned from a file."""
    with torch.device("meta"), _SkipInit():
        return factory()


def build_and_load(factory: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], source: str, what: str) -> nn.Module:
    """Build the model on the meta device, check ``state`` strictly, assign its tensors."""
    model = meta_model(factory)
    expected = model.state_dict()
    check_state_dict(expected, state, source, what)
    model.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return model.eval()


def describe_shapes(factory: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    return meta_model(factory).state_dict()


# --------------------------------------------------------------------------- ESM-2


def _strip(state: Mapping[str, torch.Tensor], prefix_pattern: str, unused: re.Pattern) -> dict[str, torch.Tensor]:
    pat = re.compile(prefix_pattern)
    out = {}
    for k, v in state.items():
        k = pat.sub("", k)
        if not unused.match(k):
            out[k] = v
    return out


def read_fair_esm(path: Path) -> tuple[ESM2Config, dict[str, torch.Tensor], dict]:
    """Config, state dict (fair-esm names) and extra metadata of a fair-esm checkpoint."""
    obj = load_torch_file(path, [argparse.Namespace])
    if not isinstance(obj, Mapping) or "model" not in obj or "cfg" not in obj:
        raise ModelFileError(
            f"{path}: not a fair-esm ESM-2 checkpoint (expected a dict with 'cfg' and 'model'; "
            f"found {sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__})"
        )
    cfg = obj["cfg"].get("model") if isinstance(obj["cfg"], Mapping) else None
    get = (lambda k: getattr(cfg, k, None)) if not isinstance(cfg, Mapping) else cfg.get
    fields = ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads")
    if cfg is None or any(get(k) is None for k in fields):
        raise ModelFileError(f"{path}: fair-esm checkpoint has no model config ({', '.join(fields)})")
    config = ESM2Config(
        num_layers=int(get("encoder_layers")),
        embed_dim=int(get("encoder_embed_dim")),
        attention_heads=int(get("encoder_attention_heads")),
        token_dropout=bool(get("token_dropout") if get("token_dropout") is not None else True),
        name=path.stem,
    )
    state = _strip(obj["model"], r"^(encoder\.sentence_encoder\.|encoder\.)", ESM_UNUSED)
    meta = {"demo_model": bool(get("virnucflow_demo") or False), "format": "fair-esm"}
    return config, state, meta


# ESM-2 parameter names: Hugging Face EsmModel <-> fair-esm (transformers' convert_esm.py).
ESM_PARAMETER_NAMES = [
    ("embeddings.word_embeddings.", "embed_tokens."),
    ("encoder.emb_layer_norm_after.", "emb_layer_norm_after."),
    ("encoder.layer.{n}.attention.self.query.", "layers.{n}.self_attn.q_proj."),
    ("encoder.layer.{n}.attention.self.key.", "layers.{n}.self_attn.k_proj."),
    ("encoder.layer.{n}.attention.self.value.", "layers.{n}.self_attn.v_proj."),
    ("encoder.layer.{n}.attention.self.rotary_embeddings.", "layers.{n}.self_attn.rot_emb."),
    ("encoder.layer.{n}.attention.output.dense.", "layers.{n}.self_attn.out_proj."),
    ("encoder.layer.{n}.attention.LayerNorm.", "layers.{n}.self_attn_layer_norm."),
    ("encoder.layer.{n}.intermediate.dense.", "layers.{n}.fc1."),
    ("encoder.layer.{n}.output.dense.", "layers.{n}.fc2."),
    ("encoder.layer.{n}.LayerNorm.", "layers.{n}.final_layer_norm."),
]


def rename(name: str, table: list[tuple[str, str]], reverse: bool = False) -> str | None:
    """``name`` with its prefix mapped by ``table`` (pairs ``(theirs, ours)``; ``{n}`` is a layer number)."""
    for theirs, ours in table:
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        pattern = "^" + re.escape(src).replace(r"\{n\}", r"(?P<n>\d+)")
        m = re.match(pattern, name)
        if m:
            return dst.format(n=m.groupdict().get("n")) + name[m.end():]
    return None


def hf_esm_to_fair(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Hugging Face EsmModel keys to fair-esm's; unknown keys are kept (and then refused)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^esm\.", "", k)
        if not ESM_UNUSED.match(k):
            out[rename(k, ESM_PARAMETER_NAMES) or k] = v
    return out


def read_hf_esm(directory: Path) -> tuple[ESM2Config, dict[str, torch.Tensor], dict]:
    cfg = read_hf_config(directory)
    if cfg.get("model_type") != "esm":
        raise ModelFileError(f"{directory / 'config.json'}: model_type {cfg.get('model_type')!r} is not an ESM-2 ('esm') model")
    if cfg.get("position_embedding_type", "rotary") != "rotary" or cfg.get("emb_layer_norm_before"):
        raise ModelFileError(f"{directory / 'config.json'}: an ESM-1 style config (absolute positions or embedding LayerNorm), not ESM-2")
    try:
        config = ESM2Config(
            num_layers=int(cfg["num_hidden_layers"]),
            embed_dim=int(cfg["hidden_size"]),
            attention_heads=int(cfg["num_attention_heads"]),
            token_dropout=bool(cfg.get("token_dropout", True)),
            vocab_size=int(cfg.get("vocab_size", 33)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
            name=directory.name,
        )
    except KeyError as exc:
        raise ModelFileError(f"{directory / 'config.json'}: missing {exc}") from None
    if int(cfg.get("intermediate_size", 4 * config.embed_dim)) != config.ffn_dim:
        raise ModelFileError(f"{directory / 'config.json'}: intermediate_size must be 4 x hidden_size for ESM-2")
    state = hf_esm_to_fair(read_hf_weights(directory))
    # transformers >= 5 keeps one model-level rotary table instead of one per layer.
    shared_freq = state.pop("rotary_embeddings.inv_freq", None)
    missing_freq = [k for k in describe_shapes(lambda: ESM2(config)) if k.endswith("inv_freq") and k not in state]
    if shared_freq is not None:
        state.update({k: shared_freq for k in missing_freq})
    elif missing_freq:
        # Some exports do not persist inv_freq at all; fair-esm's default values are then used.
        log.warning("%s: no rotary inv_freq in the weights; using the default frequencies", directory)
        with torch.device("cpu"):
            default = ESM2(ESM2Config(1, config.embed_dim, config.attention_heads)).layers[0].self_attn.rot_emb.inv_freq
        state.update({k: default.clone() for k in missing_freq})
    return config, state, {"demo_model": bool(cfg.get("virnucflow_demo", False)), "format": "huggingface"}


def read_esm2(path: str | Path) -> tuple[ESM2Config, dict[str, torch.Tensor], dict]:
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: ESM-2 model not found")
    return read_hf_esm(p) if p.is_dir() else read_fair_esm(p)


def load_esm2(path: str | Path) -> tuple[ESM2, dict]:
    """ESM-2 from a fair-esm ``.pt`` or a Hugging Face directory (on the CPU, memory-mapped)."""
    config, state, meta = read_esm2(path)
    model = build_and_load(lambda: ESM2(config), state, str(path), f"ESM-2 {config.name} ({config.num_layers} layers, {config.embed_dim} wide)")
    return model, {**meta, "config": config.to_dict()}


# --------------------------------------------------------------------------- DNABERT-S


def dnabert_s_from_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names (optionally ``bert.``-prefixed, MLM head dropped) -> module names; unknown keys kept (then refused)."""
    state = _strip(state, r"^bert\.", DNABERT_UNUSED)
    return {rename(k, DNABERT_S_NAMES) or k: v for k, v in state.items()}


def dnabert_s_to_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module names -> the published checkpoint's names (Hugging Face BertModel of DNABERT-S)."""
    out = {}
    for k, v in state.items():
        new = rename(k, DNABERT_S_NAMES, reverse=True)
        if new is None:
            raise KeyError(f"no checkpoint name for {k}")
        out[new] = v
    return out


def read_dnabert_s(path: str | Path) -> tuple[DNABERTSConfig, dict[str, torch.Tensor], dict]:
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: DNABERT-S model directory not found")
    if not p.is_dir():
        raise ModelFileError(f"{p}: DNABERT-S must be a Hugging Face model directory (config.json, weights, tokenizer.json)")
    cfg = read_hf_config(p)
    if cfg.get("model_type") != "bert":
        raise ModelFileError(f"{p / 'config.json'}: model_type {cfg.get('model_type')!r} is not a DNABERT-S ('bert') model")
    try:
        config = DNABERTSConfig.from_hf(cfg, name=p.name)
    except KeyError as exc:
        raise ModelFileError(f"{p / 'config.json'}: missing {exc}") from None
    if not (p / "tokenizer.json").is_file():
        raise ModelFileError(f"{p}: no tokenizer.json (DNABERT-S's BPE tokenizer is part of the model directory)")
    state = dnabert_s_from_checkpoint(read_hf_weights(p))
    return config, state, {"demo_model": bool(cfg.get("virnucflow_demo", False)), "format": "huggingface"}


def read_dnabert_s_tokenizer(path: str | Path, config: DNABERTSConfig):
    """The model directory's ``tokenizer.json``, checked against the model's embeddings."""
    from .dnabert_s import DNABERTSTokenizer

    file = Path(path) / "tokenizer.json"
    try:
        tokenizer = DNABERTSTokenizer(file)
    except Exception as exc:  # tokenizers raises its own exception types
        raise ModelFileError(f"{file}: not a tokenizers JSON file ({short(exc)})") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelFileError(f"{file}: {tokenizer.vocab_size} tokens but the model has only {config.vocab_size} embeddings")
    return tokenizer


def load_dnabert_s(path: str | Path) -> tuple[DNABERTS, dict]:
    """DNABERT-S and its tokenizer from a Hugging Face model directory."""
    config, state, meta = read_dnabert_s(path)
    model = build_and_load(lambda: DNABERTS(config), state, str(path), f"DNABERT-S ({config.num_hidden_layers} layers, {config.hidden_size} wide)")
    model.tokenizer = read_dnabert_s_tokenizer(path, config)
    return model, {**meta, "config": config.to_dict()}
