"""Each model's check and manifest, for the rule ``check_model`` and ``virnucflow check-model(s)``.

:func:`check_model` resolves and validates ONE model (the config's
``models.<name>``: a path or a published name, fetched if allowed) and writes
its manifest ``results/models/{name}.json`` (``{name: entry}``), so each
embedding job depends only on its own model and changing the classifier reruns
only the scoring. The classifier's check also adds up the embedding models'
widths. A model whose files and the checking code are unchanged since its last
check is taken from the user's cache of checks instead of being loaded again.
:func:`combine_manifests` joins them (``results/models.json``);
:func:`check_models` does all of it at once (the selftest, the CLI).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..io.atomic import atomic_outputs
from .acquire import check_classifier_width, describe_model, resolve
from .registry import model_kinds, names

log = logging.getLogger("virnucflow")


def check_model(kind: str, spec: str, out: str | os.PathLike | None, allow_download: bool = True,
                others: Mapping[str, str | os.PathLike] | None = None) -> dict:
    """Resolve and validate one model; write ``{kind: entry}`` to ``out``.

    ``others`` (for the classifier): the embedding models' manifests, whose widths
    must add up to the classifier's input width.
    """
    entry = _checked(kind, spec, allow_download)
    if others:
        check_classifier_width(entry, {k: json.loads(Path(p).read_text())[k]["dim"] for k, p in others.items()})
    _write({kind: entry}, out)
    log.info("%s: %s (%s)", kind, entry["path"], entry["description"])
    return entry


def _write(manifest: Mapping, out: str | os.PathLike | None) -> None:
    """A manifest file (``{model: entry}``), written whole or not at all; nothing when ``out`` is None."""
    if out is not None:
        with atomic_outputs([out]) as (tmp,):
            Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


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

    from .. import __version__

    here = Path(__file__).resolve().parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=16)
    for f in sorted(here.glob("*.py")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _checked(kind: str, spec: str, allow_download: bool) -> dict:
    """``describe_model``'s entry, from the user's cache of checks when the model's files (fingerprint: names,
    inodes, sizes, modification and change times) and the checking code are those of an earlier check
    (``$VIRNUCFLOW_CACHE`` or ``~/.cache/virnucflow/model_checks.json``): loading a 5.7 GB checkpoint to
    validate it again costs seconds of every fresh working directory."""
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
    entry = describe_model(resolved)
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
    _write(manifest, out)
    return manifest


def check_models(models: Mapping[str, object], out: str | os.PathLike | None) -> dict:
    """Check every model of the config's ``models`` section (embedding models first, then the classifier
    against their widths); write the joined manifest to ``out``."""
    allow_download = bool(models.get("download", True))
    manifest = {kind: _checked(kind, models[kind], allow_download) for kind in model_kinds()}
    check_classifier_width(manifest["classifier"], {k: manifest[k]["dim"] for k in names()})
    _write(manifest, out)
    for kind, entry in manifest.items():
        log.info("%s: %s (%s)", kind, entry["path"], entry["description"])
    return manifest
