"""All-or-nothing output files.

A step writes each output to a temporary file beside its final path and renames
them all only when the step succeeded, so a failed or killed step never leaves
a half-written output that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; rename them into place on success.

    On any exception the temporary files (or directories) are removed and the
    final paths are left untouched (absent if they did not exist before).
    """
    finals = [Path(p) for p in paths]
    tmps = [_tmp_path(p) for p in finals]
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmps
    except BaseException:
        for t in tmps:
            _remove(t)
        raise
    missing = [str(f) for f, t in zip(finals, tmps) if not t.exists()]
    if missing:
        for t in tmps:
            _remove(t)
        raise RuntimeError(f"step finished without writing {', '.join(missing)}")
    for f, t in zip(finals, tmps):
        if f.is_dir() and not f.is_symlink():
            shutil.rmtree(f)
        os.replace(t, f)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
