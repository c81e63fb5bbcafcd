"""Precision and device policy, shared by both models.

``fp16`` (default on GPUs), ``bf16``, ``fp32`` and ``fp8`` are selectable
(``fp8``: FP16 activations with E4M3 matrix products, ``virnucflow.models.fp8``). Weights and
activations use the chosen dtype; what FP16 would lose stays in FP32:
LayerNorm statistics (PyTorch's kernels compute them in FP32), softmax
(inside the attention kernels, and explicitly in the reference path), rotary
tables, and pooling accumulation. On a CPU, FP16 kernels are slow or missing,
so ``fp16`` runs as ``fp32`` there, with a warning and the precision actually
used recorded in every output, unless ``embedding.fp16_on_cpu`` asks for FP16
anyway (to exercise the FP16 path, e.g. its overflow handling, without a GPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import ResourceError

log = logging.getLogger("virnucflow")

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp8": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # precision actually used
    requested: str

    @property
    def dtype(self) -> torch.dtype:
        """The activations' (and non-FP8 weights') dtype."""
        return DTYPES[self.name]

    @property
    def fp8(self) -> bool:
        """Matrix products of the transformer layers in FP8 E4M3."""
        return self.name == "fp8"


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: the first visible CUDA device, else the CPU."""
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"device {spec!r} requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES={_cvd()})")
    return device


def _cvd() -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def resolve_precision(requested: str, device: torch.device, fp16_on_cpu: bool = False) -> Precision:
    if requested not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {requested!r}")
    if device.type == "cpu" and requested in ("fp16", "fp8") and not fp16_on_cpu:
        log.warning("%s is not supported on the CPU: running in fp32 (recorded in the outputs)", requested)
        return Precision("fp32", requested)
    if requested == "fp8":
        from .fp8 import supported

        why = supported(device)
        if why:
            raise ResourceError(f"precision fp8 requested but {why}; use fp16")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ResourceError(f"bf16 requested but {torch.cuda.get_device_name(device)} does not support it")
    return Precision(requested, requested)
