"""Installing the project's Snakemake profiles as the user's own.

``snakemake --profile NAME`` looks for ``NAME/profile.yaml`` in the current
directory, in ``$XDG_CONFIG_HOME/snakemake`` (default ``~/.config/snakemake``)
and in ``/etc/xdg/snakemake``, not in the project's ``profiles/``. Installing
``profiles/slurm`` as ``~/.config/snakemake/slurm`` makes ``snakemake --profile
slurm`` work from any directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from virnucflow.io.atomic import atomic_outputs
from virnucflow.errors import VirNucFlowError
from virnucflow.layout import share

PROFILES = share() / "profiles"
INSTALLABLE = ("slurm",)


def user_profile_dir(name: str) -> Path:
    """Where Snakemake finds the user's profile ``name``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "snakemake" / name


def install_profile(name: str, force: bool = False, dest: str | os.PathLike | None = None) -> Path:
    """Copy ``profiles/<name>`` to ``dest`` (default :func:`user_profile_dir`); return the folder.

    An existing profile there is replaced only with ``force``.
    """
    if name not in INSTALLABLE:
        raise VirNucFlowError(f"unknown profile {name!r}; choose from {', '.join(INSTALLABLE)}")
    source = PROFILES / name
    target = Path(dest) if dest is not None else user_profile_dir(name)
    if target.exists() and not force:
        raise VirNucFlowError(f"{target}: a profile is already there; use --force to replace it")
    with atomic_outputs([target]) as (tmp,):
        shutil.copytree(source, tmp)
    return target
