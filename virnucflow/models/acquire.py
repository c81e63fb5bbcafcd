"""Model acquisition: names or paths -> validated local files, and a manifest.

``models.esm2``, ``models.dnabert_s`` and ``models.classifier`` each take a
path (used as is; relative to the working directory) or a known name:

======================= ===================================================
``esm2_t36_3B_UR50D``   fair-esm checkpoint in torch hub's ``checkpoints/``
(and the other sizes)   (``$TORCH_HOME/hub/checkpoints``, default
                        ``~/.cache/torch/hub/checkpoints``)
``zhihan1996/DNABERT-S`` Hugging Face cache (``$HF_HOME``, default
                        ``~/.cache/huggingface``)
``virnucpro-500``,      the original classifiers, in the workflow's
``virnucpro-300``       ``resources/models/`` folder
======================= ===================================================

A missing known file is downloaded there when ``models.download`` is on and
the machine is online; otherwise the error names the file, where to put it and
the command that fetches it. :func:`check_models` validates all three files
(formats, keys and shapes, feature width against the classifier) on the
machine that runs Snakemake, before any GPU job starts, and writes the
manifest the embedding and prediction jobs read.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..io.atomic import atomic_outputs
from ..errors import ModelFileError
from .registry import CLASSIFIER_URL, CLASSIFIERS, embedding_models, get, known_kind

log = logging.getLogger("virnucflow")


def _label(kind: str) -> str:
    return f"models.{kind}"


def torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resources_dir() -> Path:
    return Path(os.environ.get("VIRNUCFLOW_RESOURCES", "resources")) / "models"


@dataclass
class Resolved:
    kind: str
    spec: str
    path: Path
    known: bool


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    with atomic_outputs([dest]) as (tmp,):
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 24):
                out.write(chunk)


def _fetch_hint(kind: str, spec: str, path: Path) -> str:
    if kind == "classifier":
        return f"wget -O {path} {CLASSIFIER_URL.format(file=CLASSIFIERS[spec].file)}"
    if get(kind).source == "huggingface":
        return f"hf download {spec}  (huggingface_hub >= 0.34; older: huggingface-cli download {spec})"
    return f"wget -P {path.parent} {get(kind).url.format(name=spec)}"


def resolve(kind: str, spec: str, allow_download: bool = True) -> Resolved:
    """Local path of the model ``spec`` (a known name or a path), fetching it if allowed."""
    label = _label(kind)
    named = known_kind(spec)
    if named is not None and named != kind:
        raise ModelFileError(f"{label}: {spec!r} is a {_label(named)} model, not a {label} one")
    if named is None:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelFileError(f"{path}: model file not found ({label}); give a local path or one of the known names "
                                 f"({', '.join(_names(kind))})")
        return Resolved(kind, spec, path.resolve(), known=False)
    if kind != "classifier" and get(kind).source == "huggingface":
        return Resolved(kind, spec, _resolve_hf(kind, spec, allow_download), known=True)
    if kind == "classifier":
        path, url = resources_dir() / CLASSIFIERS[spec].file, CLASSIFIER_URL.format(file=CLASSIFIERS[spec].file)
    else:
        path, url = torch_hub_checkpoints() / f"{spec}.pt", get(kind).url.format(name=spec)
    if not path.is_file():
        if not allow_download:
            raise ModelFileError(f"{path}: {spec} is not downloaded and models.download is off; "
                                 f"put the file there or run: {_fetch_hint(kind, spec, path)}")
        try:
            _download(url, path)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ModelFileError(f"{path}: {spec} is missing and could not be downloaded ({exc}); on a machine with "
                                 f"internet run: {_fetch_hint(kind, spec, path)}, then copy the file there") from None
    return Resolved(kind, spec, path.resolve(), known=True)


def _names(kind: str) -> list[str]:
    return list(CLASSIFIERS) if kind == "classifier" else list(get(kind).known_names)


def _resolve_hf(kind: str, repo: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    files = list(get(kind).files)
    try:
        return Path(snapshot_download(repo, allow_patterns=files, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    from huggingface_hub.constants import HF_HUB_CACHE

    where = Path(HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    if not allow_download:
        raise ModelFileError(f"{where}: {repo} is not in the Hugging Face cache and models.download is off; "
                             f"run: {_fetch_hint(kind, repo, where)}")
    try:
        return Path(snapshot_download(repo, allow_patterns=files))
    except Exception as exc:  # huggingface_hub raises many network error types
        raise ModelFileError(f"{where}: {repo} is missing and could not be downloaded ({type(exc).__name__}); on a "
                             f"machine with internet run: {_fetch_hint(kind, repo, where)}") from None


def describe_esm2(path: Path) -> dict:
    from .checkpoints import check_state_dict, describe_shapes, read_esm2
    from .esm2 import ESM2

    config, state, meta = read_esm2(path)
    check_state_dict(describe_shapes(lambda: ESM2(config)), state, str(path), f"ESM-2 ({config.num_layers} layers, {config.embed_dim} wide)")
    return {"dim": config.embed_dim, "demo": meta["demo_model"], "format": meta["format"], "config": config.to_dict(),
            "description": f"ESM-2 {config.num_layers} layers x {config.embed_dim}, {meta['format']} format"}


def describe_dnabert_s(path: Path) -> dict:
    from .checkpoints import check_state_dict, describe_shapes, read_dnabert_s, read_dnabert_s_tokenizer
    from .dnabert_s import DNABERTS

    config, state, meta = read_dnabert_s(path)
    check_state_dict(describe_shapes(lambda: DNABERTS(config)), state, str(path), f"DNABERT-S ({config.num_hidden_layers} layers, {config.hidden_size} wide)")
    read_dnabert_s_tokenizer(path, config)
    return {"dim": config.hidden_size, "demo": meta["demo_model"], "format": meta["format"], "config": config.to_dict(),
            "description": f"DNABERT-S {config.num_hidden_layers} layers x {config.hidden_size}"}


def describe_classifier(path: Path) -> dict:
    from .classifier import load_classifier

    _, meta = load_classifier(path)
    return {"dim": meta["input_dim"], "demo": meta["demo_model"], "hidden_dim": meta["hidden_dim"],
            "description": f"VirNucPro MLP {meta['input_dim']} -> {meta['hidden_dim']} -> 2"}


def describe_model(r: Resolved) -> dict:
    """A resolved model's manifest entry: its spec, its path and what the file holds."""
    entry = describe_classifier(r.path) if r.kind == "classifier" else get(r.kind).describe_file(r.path)
    return {"spec": r.spec, "path": str(r.path), **entry}


def check_classifier_width(classifier: Mapping, dims: Mapping[str, int]) -> None:
    """The classifier's input width must be the embedding models' widths added up (``dims``: name -> width)."""
    width = sum(dims[s.name] for s in embedding_models())
    if classifier["dim"] != width:
        parts = " + ".join(f"{s.label} ({dims[s.name]})" for s in embedding_models())
        raise ModelFileError(
            f"{classifier['path']}: the classifier takes {classifier['dim']} features but {parts} give {width}; "
            "VirNucPro's classifiers need the published DNABERT-S (768) and ESM-2 3B (2560)"
        )
