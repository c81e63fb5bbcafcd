"""Checks made when the workflow starts, and the per-model manifest files.

- :func:`classifier_chunk_length`: the window length the classifier was
  trained on must be the configured ``chunk_length``. The names
  ``virnucpro-300`` / ``virnucpro-500`` imply it; a classifier given as a path
  needs ``models.classifier_chunk_length`` (the file name never decides).
- :func:`config_error`: a schema violation as one line naming the config key.
- :func:`check_model`: resolve and validate ONE model and write its manifest
  ``results/models/{kind}.json`` (``{kind: entry}``), so each embedding job
  depends only on its own model and changing the classifier reruns only the
  prediction. The classifier's manifest also checks its feature width against
  the two embedding models' manifests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from .atomic import atomic_outputs
from .errors import ConfigError


log = logging.getLogger("virnucflow")


#: Window length each published classifier was trained on.
CLASSIFIER_CHUNK_LENGTHS = {"virnucpro-300": 300, "virnucpro-500": 500}


def classifier_chunk_length(classifier: str, declared: int | None, chunk_length: int) -> int:
    """The classifier's training window length, checked against ``chunk_length``.

    Raises :class:`ConfigError` when a path is given without
    ``models.classifier_chunk_length``, when a declared length contradicts a
    known name, or when it differs from ``chunk_length``.
    """
    implied = CLASSIFIER_CHUNK_LENGTHS.get(classifier)
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


#: Rules that no longer exist, and the one that does their work now.
RENAMED_RULES = {"embed_esm2": "embed", "embed_dnabert_s": "embed"}


def check_renamed_rules(resources: Mapping, overrides: Mapping[str, Iterable[str]]) -> None:
    """Refuse settings for a rule that was renamed, naming the new one (Snakemake ignores
    ``--set-resources`` for an unknown rule without a word).

    ``resources``: the config's ``resources`` section; ``overrides``: command-line
    option -> the rule names it sets (``--set-resources``, ``--set-threads``).
    """
    why = "the embedding is one job per shard running both models"
    for old, new in RENAMED_RULES.items():
        if old in (resources or {}):
            raise ConfigError(f"config key resources.{old}: there is no rule {old} ({why}): "
                              f"give resources.{new}")
        for option, rules in overrides.items():
            if old in rules:
                form = ":KEY=VALUE" if option == "--set-resources" else "=N"
                raise ConfigError(f"{option} {old}: there is no rule {old} ({why}): use {option} {new}{form}")


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


def check_model(kind: str, spec: str, out: str | os.PathLike | None, allow_download: bool = True,
                others: Mapping[str, str | os.PathLike] | None = None) -> dict:
    """Resolve and validate one model; write ``{kind: entry}`` to ``out``.

    ``others`` (for the classifier): manifests of ``esm2`` and ``dnabert_s``,
    whose widths must add up to the classifier's input width.
    """
    from .models.acquire import check_classifier_width

    entry = _checked(kind, spec, allow_download)
    if others:
        dims = {k: json.loads(Path(p).read_text())[k]["dim"] for k, p in others.items()}
        check_classifier_width(entry, dims["dnabert_s"], dims["esm2"])
    if out is not None:
        with atomic_outputs([out]) as (tmp,):
            Path(tmp).write_text(json.dumps({kind: entry}, indent=2, sort_keys=True) + "\n")
    log.info("%s: %s (%s)", kind, entry["path"], entry["description"])
    return entry


def _cache_file() -> Path:
    root = os.environ.get("VIRNUCFLOW_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virnucflow"
    return Path(root) / "model_checks.json"


def _fingerprint(path: Path) -> list:
    """Every file of a model (a file or a directory): name, device, inode, size, modification and change times."""
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(path)) if f != path else "", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns])
    return out


def _checker_code() -> str:
    """A hash of the code that checks models: a new version of it checks every model again."""
    import hashlib

    from . import __version__

    here = Path(__file__).resolve().parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=16)
    for f in [here / "checks.py", *sorted((here / "models").glob("*.py"))]:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _checked(kind: str, spec: str, allow_download: bool) -> dict:
    """``describe_model``'s entry, from the user's cache of checks when the model's files (fingerprint: names,
    inodes, sizes, modification and change times) and the checking code are those of an earlier check
    (``$VIRNUCFLOW_CACHE`` or ``~/.cache/virnucflow/model_checks.json``): loading a 5.7 GB checkpoint to
    validate it again costs seconds of every fresh working directory."""
    from .models.acquire import describe_model, resolve

    resolved = resolve(kind, str(spec), allow_download)
    key = json.dumps([kind, str(spec), str(resolved.path)])
    stamp = {"fingerprint": _fingerprint(resolved.path), "code": _checker_code()}
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(key)
    if isinstance(hit, dict) and {k: hit.get(k) for k in stamp} == json.loads(json.dumps(stamp)):
        log.info("%s: %s unchanged since its last check (%s): not loaded again", kind, resolved.path, cache)
        return hit["entry"]
    entry = describe_model(kind, spec, allow_download)
    known[key] = {**stamp, "entry": entry}
    _remember(cache, known)
    return entry


def _remember(cache: Path, known: dict) -> None:
    """Write the cache of checks through a temporary file of this process's own (several checks run at
    once; the last one's file wins, and a lost entry only means a check is made again). A cache that
    cannot be written (a read-only home) is no error: the checks are then always made."""
    import tempfile

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache.parent, prefix=".model_checks.", delete=False) as f:
            f.write(json.dumps(known, sort_keys=True))
        os.replace(f.name, cache)
    except OSError:
        with contextlib.suppress(OSError, NameError):
            os.unlink(f.name)


def combine_manifests(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> dict:
    """One manifest of several models from their own manifests (for steps that use all three)."""
    manifest: dict = {}
    for p in paths:
        manifest.update(json.loads(Path(p).read_text()))
    with atomic_outputs([out]) as (tmp,):
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


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
