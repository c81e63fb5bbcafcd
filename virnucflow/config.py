"""The workflow's configuration schema: the one place where config defaults live.

``workflow/schemas/config.schema.yaml`` declares every key with its default;
Snakemake fills them in when it validates the config (``common.smk``), and the
CLI, tests and benchmarks read them here instead of writing them again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _defaults(node: dict) -> Any:
    props = node.get("properties")
    if props is None:
        return node.get("default")
    out = dict(node.get("default") or {})
    for key, sub in props.items():
        value = _defaults(sub)
        if value is not None:
            out[key] = value
    return out


def schema_defaults() -> dict:
    """Every default of the schema, nested as the config is (keys without a default are left out)."""
    return _defaults(schema())
