"""All-or-nothing output files.

A step writes each output to a temporary file beside its final path
(``.{name}.tmp{pid}``) and renames them all only when the step succeeded, so a
failed or killed step never leaves a half-written output that a later run
would mistake for a finished one. Temporary files that a killed step left
behind are removed when the same step runs again. A full disk, a read-only or
unwritable output folder ends the step with one line naming the output.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Sequence

from virnucflow.errors import OutputError

log = logging.getLogger("virnucflow")

# Errors that say the output cannot be written (not that the step is wrong).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.{name}.tmp<pid>`` files of ``path`` left by killed runs (not this process's)."""
    stale = re.compile(rf"^\.{re.escape(path.name)}\.tmp(\d+)$")
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(path.parent):
            m = stale.match(entry.name)
            if m and int(m.group(1)) != os.getpid():
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
    return removed


def _write_error(exc: OSError, finals: Sequence[Path], tmps: Sequence[Path]) -> OutputError | None:
    """One-line error for an output that cannot be written, or None for other errors."""
    if exc.errno not in _WRITE_ERRNOS:
        return None
    names = {str(t): f for t, f in zip(tmps, finals)}
    names.update({str(f): f for f in finals})
    names.update({str(f.parent): f.parent for f in finals})
    if exc.filename is not None and str(exc.filename) not in names:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return None  # an input that cannot be read: the caller reports it
        where = Path(exc.filename)
    else:
        # a write that failed names no file (disk full): name the output folder
        where = names.get(str(exc.filename), finals[0]) if exc.filename is not None else finals[0].parent
    return OutputError(f"{where}: cannot write output ({exc.strerror or os.strerror(exc.errno)})")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; rename them into place on success.

    On any exception the temporary files (or directories) are removed and the
    final paths are left untouched (absent if they did not exist before). An
    output that cannot be written (disk full, read-only or unwritable folder)
    raises :class:`OutputError` naming it.
    """
    finals = [Path(p) for p in paths]
    tmps = [_tmp_path(p) for p in finals]
    try:
        for p in finals:
            p.parent.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temporaries(p):
                log.info("removed %s, left by an earlier run that was stopped", stale)
    except OSError as exc:
        err = _write_error(exc, finals, tmps)
        if err is None:
            raise
        raise err from None
    try:
        yield tmps
    except BaseException as exc:
        for t in tmps:
            _remove(t)
        if isinstance(exc, OSError):
            err = _write_error(exc, finals, tmps)
            if err is not None:
                raise err from None
        raise
    missing = [str(f) for f, t in zip(finals, tmps) if not t.exists()]
    if missing:
        for t in tmps:
            _remove(t)
        raise RuntimeError(f"step finished without writing {', '.join(missing)}")
    try:
        for f, t in zip(finals, tmps):
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            os.replace(t, f)
    except OSError as exc:
        for t in tmps:
            _remove(t)
        err = _write_error(exc, finals, tmps)
        if err is None:
            raise
        raise err from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, OSError):
            path.unlink()
