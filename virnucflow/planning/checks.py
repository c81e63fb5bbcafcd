"""Checks made when the workflow starts (the models' own checks: :mod:`virnucflow.models.manifest`).

- :func:`classifier_chunk_length`: the window length the classifier was
  trained on must be the configured ``chunk_length``. The names
  ``virnucpro-300`` / ``virnucpro-500`` imply it; a classifier given as a path
  needs ``models.classifier_chunk_length`` (the file name never decides).
- :func:`config_error`: a schema violation as one line naming the config key.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from virnucflow.errors import ConfigError
from virnucflow.models.registry import CLASSIFIERS


log = logging.getLogger("virnucflow")


def classifier_chunk_length(classifier: str, declared: int | None, chunk_length: int) -> int:
    """The classifier's training window length, checked against ``chunk_length``.

    Raises :class:`ConfigError` when a path is given without
    ``models.classifier_chunk_length``, when a declared length contradicts a
    known name, or when it differs from ``chunk_length``.
    """
    implied = CLASSIFIERS[classifier].chunk_length if classifier in CLASSIFIERS else None
    if implied is not None:
        if declared is not None and declared != implied:
            raise ConfigError(
                f"models.classifier_chunk_length {declared} contradicts models.classifier {classifier} "
                f"(trained on {implied} bp windows); remove the key or fix it"
            )
        if implied != chunk_length:
            raise ConfigError(
                f"chunk_length {chunk_length} does not match the classifier {classifier} "
                f"(trained on {implied} bp windows); use virnucpro-{chunk_length} or chunk_length {implied}"
            )
        return implied
    if declared is None:
        raise ConfigError(
            f"models.classifier is a file ({classifier}): set models.classifier_chunk_length to the window "
            f"length it was trained on (300 or 500 for VirNucPro's; it must equal chunk_length {chunk_length})"
        )
    if declared != chunk_length:
        raise ConfigError(
            f"chunk_length {chunk_length} does not match the classifier {classifier} (models.classifier_chunk_length: "
            f"trained on {declared} bp windows); use chunk_length {declared} or a classifier trained on {chunk_length}"
        )
    return declared


def check_rule_settings(overrides: Mapping[str, Iterable[str]], rules: Iterable[str]) -> None:
    """Refuse ``--set-resources``/``--set-threads`` for a rule the workflow does not have (Snakemake ignores
    them without a word), naming the nearest one.

    ``overrides``: command-line option -> the rule names it sets; ``rules``: the rules that take resources
    (the schema's ``resources`` section).
    """
    import difflib

    rules = list(rules)
    for option, named in overrides.items():
        for rule in named:
            if rule not in rules:
                near = difflib.get_close_matches(rule, rules, n=1, cutoff=0.5)
                form = ":KEY=VALUE" if option == "--set-resources" else "=N"
                hint = f"; did you mean {option} {near[0]}{form}?" if near else ""
                raise ConfigError(f"{option} {rule}: there is no rule {rule}{hint} (rules with resources: "
                                  f"{', '.join(rules)})")


def unknown_key(path: str, key: str, known: Iterable[str]) -> str:
    """One line for a config key the schema does not know, with the nearest known one."""
    import difflib

    known = list(known)
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    return f"config key {path}: unknown key; {hint}(known here: {', '.join(known)})"


def config_error(exc: BaseException, schema: Mapping | None = None) -> str:
    """One line for a JSON-schema validation error: the config key, the value and what is allowed."""
    err = exc
    while err is not None and not hasattr(err, "absolute_path"):
        err = err.__cause__ or err.__context__
    if err is None:
        return " ".join(str(exc).split())
    key = ".".join(map(str, err.absolute_path)) or "(top level)"
    if getattr(err, "validator", None) == "additionalProperties" and isinstance(err.instance, Mapping):
        known = list((err.schema.get("properties") or {}) if isinstance(err.schema, Mapping) else [])
        unknown = [k for k in err.instance if k not in known]
        if unknown:
            return unknown_key(".".join(map(str, [*err.absolute_path, unknown[0]])), str(unknown[0]), known)
    desc = err.schema.get("description") if isinstance(err.schema, Mapping) else None
    if desc is None and schema is not None:  # the key's own description
        node: object = schema
        for part in err.absolute_path:
            node = node.get("properties", {}).get(part, {}) if isinstance(node, Mapping) else {}
        desc = node.get("description") if isinstance(node, Mapping) else None
    return f"config key {key}: {err.message}" + (f" (allowed: {desc})" if desc else "")


def _resolved(node: Mapping, schema: Mapping) -> Mapping:
    """A schema node with its ``$ref`` (a ``#/$defs/...`` of this schema) merged in."""
    ref = node.get("$ref")
    if not ref:
        return node
    base = schema["$defs"][ref.rsplit("/", 1)[-1]]
    return {**base, **node, "properties": {**(base.get("properties") or {}), **(node.get("properties") or {})}}


def _integer_only(node: Mapping) -> bool:
    alternatives = node.get("oneOf") or node.get("anyOf") or [node]
    types = {t for alt in alternatives for t in ([alt["type"]] if isinstance(alt.get("type"), str) else alt.get("type") or [])}
    return "integer" in types and "number" not in types


def check_config_values(config: Mapping, schema: Mapping, node: Mapping | None = None, path: str = "") -> None:
    """What JSON schema lets through but the workflow must not: a whole number written as a float
    (``500.0``: JSON schema counts it as an integer) and, in the mappings that pass extra keys on
    (a rule's resources), a key that looks like a misspelt known one (``mem_mbb``)."""
    node = _resolved(schema if node is None else node, schema)
    props = node.get("properties") or {}
    for key, value in config.items():
        where = f"{path}.{key}" if path else str(key)
        sub = props.get(key)
        if sub is None:
            import difflib

            near = difflib.get_close_matches(str(key), list(props), n=1, cutoff=0.75)
            if near and node.get("additionalProperties") not in (False, None):
                raise ConfigError(f"config key {where}: unknown key; did you mean {near[0]}? (keys other than "
                                  f"{', '.join(props)} are passed to the executor as resources)")
            continue
        sub = _resolved(sub, schema)
        if isinstance(value, Mapping):
            check_config_values(value, schema, sub, where)
        elif isinstance(value, float) and _integer_only(sub):
            whole = f"; write {int(value)}" if value.is_integer() else ""
            raise ConfigError(f"config key {where}: {value!r} is not a whole number{whole}")
