"""Where the workflow's own files are.

Installed (``pip install virnucflow``), the Snakefile, rules, scripts, schemas, report captions,
config templates, profiles, the conda environment and the demo's inputs ship inside the package,
in ``virnucflow/share/`` (the checkout's ``workflow/``, ``config/``, ``profiles/``, ``envs/`` and
``resources/demo/``, same layout); in a checkout (an editable install) they are the checkout's own
top-level folders.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def share() -> Path:
    """The folder holding ``workflow/``, ``config/``, ``profiles/``, ``envs/`` and ``resources/demo/``."""
    installed = PACKAGE / "share"
    return installed if (installed / "workflow" / "Snakefile").is_file() else PACKAGE.parent


def snakefile() -> Path:
    return share() / "workflow" / "Snakefile"
