"""Published model sizes and names, for tests and benchmarks that build full-size random-weight models."""

from __future__ import annotations

from typing import Mapping

import torch

from virnucflow.models.checkpoints import ESM_PARAMETER_NAMES, rename
from virnucflow.models.esm2 import ESM2Config

# The published ESM-2 sizes (fair-esm pretrained.py / README); their names are the registry's known names.
KNOWN_CONFIGS = {
    "esm2_t6_8M_UR50D": ESM2Config(6, 320, 20, name="esm2_t6_8M_UR50D"),
    "esm2_t12_35M_UR50D": ESM2Config(12, 480, 20, name="esm2_t12_35M_UR50D"),
    "esm2_t30_150M_UR50D": ESM2Config(30, 640, 20, name="esm2_t30_150M_UR50D"),
    "esm2_t33_650M_UR50D": ESM2Config(33, 1280, 20, name="esm2_t33_650M_UR50D"),
    "esm2_t36_3B_UR50D": ESM2Config(36, 2560, 40, name="esm2_t36_3B_UR50D"),
    "esm2_t48_15B_UR50D": ESM2Config(48, 5120, 40, name="esm2_t48_15B_UR50D"),
}


def fair_to_hf_esm(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """fair-esm ESM-2 names -> Hugging Face EsmModel names (``prefix="esm."`` for EsmForMaskedLM): the
    reverse of what the loader reads (``checkpoints.ESM_PARAMETER_NAMES``), to write HF files of a model."""
    out = {}
    for k, v in state.items():
        new = rename(k, ESM_PARAMETER_NAMES, reverse=True)
        if new is None:
            raise KeyError(f"no Hugging Face name for {k}")
        out[prefix + new] = v
    return out
