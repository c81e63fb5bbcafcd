"""Shared test fixtures and paths.

``REFERENCE`` holds inputs and outputs of the original VirNucPro
(``prediction.py input.fa 500 500_model.pth``) from ../shared, present beside
every checkout and in CI. ``ORIGINAL`` (tests/data/original) holds more inputs
and the outputs that the original's own functions wrote for them; its
PROVENANCE.md says how they were made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIRNUCFLOW_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "virnucpro_original"
ORIGINAL = REPO / "tests" / "data" / "original"


def pytest_configure(config):
    if not REFERENCE.is_dir():
        raise pytest.UsageError(
            f"{REFERENCE} not found: the tests need ../shared beside the checkout "
            "(or VIRNUCFLOW_SHARED pointing at it)"
        )


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def sample_sheet_error(tmp_path: Path, name: str, fasta: Path) -> tuple[Path, str]:
    """Write a one-sample sheet; return its path and the message ``read_sample_sheet`` refuses it with."""
    from virnucflow.errors import InputError
    from virnucflow.io.samples import read_sample_sheet

    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"sample\tfasta\n{name}\t{fasta}\n")
    with pytest.raises(InputError) as exc:
        read_sample_sheet(sheet)
    return sheet, str(exc.value)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m virnucflow ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "virnucflow", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
