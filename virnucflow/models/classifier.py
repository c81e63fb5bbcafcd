"""The original VirNucPro classifier and safe loading of its ``.pth`` files.

The published ``300_model.pth`` / ``500_model.pth`` are whole modules pickled
by ``torch.save(model, 'model.pth')`` from ``train.py`` run as a script, so the
pickle names the class ``__main__.MLPClassifier``. Unpickling such a file the
ordinary way executes whatever the pickle says; we load it with PyTorch's
weights-only unpickler instead, allowing exactly the four classes such a file
contains (our :class:`MLPClassifier` standing in for ``__main__``'s) and then
copy its parameters into a fresh module of ours. A plain state dict works too.
Any other global in the file is refused before anything is unpickled.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError, short
from .registry import CLASSIFIER_BATCH


class MLPClassifier(nn.Module):
    """3328 -> hidden -> BatchNorm1d -> ReLU -> dropout(0.5) -> 2, as the original.

    Attribute names match the original so its state dict loads unchanged.
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_class: int = 2):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    @property
    def input_dim(self) -> int:
        return self.hidden_layer.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, input_dim) -> (N, num_class)
        x = F.relu(self.bn1(self.hidden_layer(x)))
        return self.output_layer(self.dropout(x))


# Globals a whole-module pickle of the original classifier contains (its class is __main__'s, as
# train.py ran as a script), or of ours (``torch.save(model)`` of this module's class).
_PICKLED_CLASSES = [
    (MLPClassifier, "__main__.MLPClassifier"),
    MLPClassifier,
    nn.Linear,
    nn.BatchNorm1d,
    nn.Dropout,
]
_ALLOWED_NAMES = {"__main__.MLPClassifier"} | {
    f"{c.__module__}.{c.__qualname__}" for c in _PICKLED_CLASSES[1:]
}
_REQUIRED = ("hidden_layer.weight", "hidden_layer.bias", "output_layer.weight", "output_layer.bias")


def _state_dict_of(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
        return obj
    raise ModelFileError(f"{path}: not a classifier: the file holds a {type(obj).__name__}")


def load_classifier(path: str | os.PathLike) -> tuple[MLPClassifier, dict]:
    """Load a VirNucPro classifier (whole pickled module or state dict), safely.

    Returns the model in eval mode and metadata (``input_dim``, ``hidden_dim``,
    ``demo_model``). Raises :class:`ModelFileError` naming the file for a
    missing, truncated, unsafe or mismatched file.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: classifier file not found")
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(p))
    except (RuntimeError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelFileError(f"{p}: truncated or not a PyTorch file ({short(exc, 300)})") from None
    refused = sorted(unsafe - _ALLOWED_NAMES)
    if refused:
        raise ModelFileError(
            f"{p}: refused to load: the pickle references {', '.join(refused)}, "
            "which a VirNucPro classifier never contains (possibly malicious)"
        )
    try:
        with torch.serialization.safe_globals(_PICKLED_CLASSES):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{p}: refused to load: {short(exc, 300)}") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelFileError(f"{p}: truncated or not a PyTorch file ({short(exc, 300)})") from None
    demo = bool(getattr(obj, "virnucflow_demo", False))
    state = dict(_state_dict_of(obj, p))
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ModelFileError(f"{p}: not a VirNucPro classifier: missing {', '.join(missing)}")
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            kinds = "+".join(k for k, f in (("NaN", torch.isnan), ("Inf", torch.isinf)) if f(value).any())
            raise ModelFileError(f"{p}: the classifier's {key} holds {bad} non-finite value(s) ({kinds}): it would "
                                 "score every frame NaN; the file is damaged or was saved from a diverged training run")
    hidden, input_dim = state["hidden_layer.weight"].shape
    num_class = state["output_layer.weight"].shape[0]
    if num_class != 2:
        raise ModelFileError(f"{p}: classifier has {num_class} outputs, expected 2 (others, virus)")
    model = MLPClassifier(int(input_dim), int(hidden), 2)
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys)}")
    if problems:
        raise ModelFileError(f"{p}: classifier weights do not match the VirNucPro MLP: {'; '.join(problems)}")
    model.eval()
    return model, {"input_dim": int(input_dim), "hidden_dim": int(hidden), "demo_model": demo}



#: Rows per forward pass. A row's scores can depend on the batch it is computed in (the CPU
#: matmul's blocking), so every caller scores the same batches: rows k*BATCH to (k+1)*BATCH
#: (and shards are cut there: :mod:`virnucflow.steps.shard`).
BATCH = CLASSIFIER_BATCH


@torch.no_grad()
def classify(model: MLPClassifier, features: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Softmax scores (N, 2) in float32: column 0 non-viral, column 1 viral."""
    if features.ndim != 2 or features.shape[1] != model.input_dim:
        raise ModelFileError(
            f"classifier expects {model.input_dim}-wide features but the embeddings are "
            f"{features.shape[1] if features.ndim == 2 else 'not a matrix'} wide: the DNABERT-S and "
            "ESM-2 models do not match the classifier (VirNucPro's needs 768 + 2560 = 3328)"
        )
    model.eval()
    out = [F.softmax(model(features[i : i + batch_size].float()), dim=1) for i in range(0, len(features), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, 2))

