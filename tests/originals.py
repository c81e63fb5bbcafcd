"""Readers of the original VirNucPro's per-model feature files (for comparisons in tests)."""

from __future__ import annotations

import os

import numpy as np
import torch


def read_original_dnabert_pt(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """IDs and vectors from the original's ``*_DNABERT_S.pt``."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    vectors = np.array([d["mean_representation"] for d in obj["data"]], dtype=np.float32)
    return list(obj["nucleotide"]), vectors.reshape(len(obj["nucleotide"]), -1)


def read_original_esm_pt(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """IDs and vectors from the original's ``*_ESM.pt``."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not obj["data"]:
        return list(obj["proteins"]), np.zeros((0, 0), np.float32)
    return list(obj["proteins"]), torch.stack(obj["data"]).float().numpy()
