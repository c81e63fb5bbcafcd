"""The workflow's configuration schema: the one place where config defaults live.

``workflow/schemas/config.schema.yaml`` declares every key with its default;
Snakemake fills them in when it validates the config (``common.smk``), and the
CLI, tests and benchmarks read them here instead of writing them again.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from virnucflow.errors import ConfigError
from virnucflow.layout import share

SCHEMA = share() / "workflow" / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _file_schema() -> dict:
    """The workflow's schema file as it is (read once; not to be changed: :func:`schema` copies it)."""
    return yaml.safe_load(SCHEMA.read_text())


@functools.lru_cache(maxsize=None)
def schema() -> dict:
    """The config schema: the workflow's file, plus ``models.<name>`` and ``embedding.<name>`` for each
    registered embedding model the file does not list (a model added by a package, virnucflow.models.registry)."""
    from virnucflow.models.registry import embedding_models

    tree = copy.deepcopy(_file_schema())
    models, embedding = tree["properties"]["models"], tree["properties"]["embedding"]
    for spec in embedding_models():
        if spec.name not in models["properties"]:
            entry = {"type": "string", "description": f"{spec.label}: a path" + (
                f" or {', '.join(spec.known_names)}" if spec.known_names else "")}
            if spec.known_names:
                entry["default"] = spec.known_names[0]
            else:
                models.setdefault("required", []).append(spec.name)
            models["properties"][spec.name] = entry
        embedding["properties"].setdefault(
            spec.name, {"$ref": "#/$defs/model_embedding", "description": f"{spec.label} only; overrides the shared keys above"})
    return tree


def schema_file() -> str:
    """The schema's path for Snakemake's ``validate``: the workflow's file, or where models were added to it
    (:func:`schema`), the effective schema written to ``.snakemake/virnucflow/config.schema.yaml``."""
    tree = schema()
    if tree == _file_schema():
        return str(SCHEMA)
    path = Path(".snakemake", "virnucflow", "config.schema.yaml").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(tree, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path)


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


#: Emergency overrides without editing files (folded into the rules' params, so changing
#: them re-runs the embedding): a precision for every model, or the earlier tool's switch.
ENV_PRECISION = "VIRNUCFLOW_PRECISION"
ENV_DISABLE_FP16 = "VIRNUCPRO_DISABLE_FP16"


def load_config(path: str | os.PathLike) -> dict:
    """A config file as the workflow sees it: read, validated against the schema, defaults filled in
    (Snakemake's own validation, so a key means the same here and in a run)."""
    from snakemake.utils import validate

    from virnucflow.planning.checks import check_config_values, config_error

    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the config file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not a YAML file ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{p}: a config file is a YAML mapping of keys (samples, chunk_length, models, ...)")
    try:
        validate(config, schema_file(), set_default=True)
    except Exception as exc:  # snakemake's WorkflowError wrapping jsonschema's ValidationError
        raise ConfigError(f"{p}: {config_error(exc, schema())}") from None
    try:
        check_config_values(config, schema())
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return config


def model_sections() -> tuple[str, ...]:
    """The models with their own subsection of ``embedding`` (``embedding.esm2``, ...)."""
    return tuple(k for k, v in schema()["properties"]["embedding"]["properties"].items() if "$ref" in v)


def precisions() -> list[str]:
    """The precisions a model may run in: the schema's enum (the one list of them)."""
    return list(schema()["properties"]["embedding"]["properties"]["precision"]["enum"])


def model_options(embedding: Mapping, model: str, environ: Mapping[str, str] = os.environ) -> dict:
    """Options of ``model``: the shared keys, the model's own (``embedding.<model>.*``), then
    ``VIRNUCFLOW_PRECISION`` or ``VIRNUCPRO_DISABLE_FP16=1`` from the environment. (Here, not
    in the engine, so that the Snakefile resolves them without importing torch.)"""
    sections = model_sections()
    options = {k: v for k, v in embedding.items() if k not in sections and not isinstance(v, dict)}
    options.update(embedding.get(model) or {})
    forced = environ.get(ENV_PRECISION, "").strip().lower()
    if forced:
        allowed = [p for p in precisions() if p != "fp8"]  # an emergency switch rolls back, never to FP8
        if forced not in allowed:
            raise ConfigError(f"{ENV_PRECISION}={forced!r}: expected {', '.join(allowed[:-1])} or {allowed[-1]}")
        options["precision"] = forced
    elif environ.get(ENV_DISABLE_FP16, "").strip() not in ("", "0") and options.get("precision") == "fp16":
        options["precision"] = "fp32"
    return options


def embedding_options(embedding: Mapping, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, dict], list[str]]:
    """Every embedding model's options (:func:`model_options`), resolved once for the rules, ``fp32_compare``,
    the selftest and the CLI; and one line per model whose precision the environment changed (to log)."""
    from virnucflow.models.registry import names

    resolved = {m: model_options(embedding, m, environ) for m in names()}
    notes = [f"{m}: precision {o['precision']} from the environment ({ENV_PRECISION}/{ENV_DISABLE_FP16})"
             for m, o in resolved.items()
             if o.get("precision") != (embedding.get(m) or {}).get("precision", embedding.get("precision"))]
    return resolved, notes
