"""Running one workflow step: from a Snakemake rule's script or from the CLI.

Every step is a library function. ``workflow/scripts/*.py`` call it inside
:func:`rule_step`, passing ``snakemake.input``/``output``/``params`` directly;
``virnucflow`` (the CLI) calls the same function inside :func:`cli_step`. Both
set up logging (to stderr and, for rules, to the rule's ``log:`` file) and turn
a :class:`VirNucFlowError` into one line ``virnucflow: error: <message>`` and
exit status 1 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from .errors import VirNucFlowError

log = logging.getLogger("virnucflow")
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(log_file: str | Path | None = None) -> None:
    """Log INFO and above to stderr and, when given, append to ``log_file``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    log.handlers.clear()
    for h in handlers:
        h.setFormatter(FORMAT)
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def one_line(exc: BaseException) -> str:
    return "virnucflow: error: " + " ".join(str(exc).split())


@contextlib.contextmanager
def cli_step(log_file: str | Path | None = None) -> Iterator[None]:
    """Run the body as a step; a user error ends the process with one line and status 1."""
    setup_logging(log_file)
    try:
        yield
    except VirNucFlowError as exc:
        _fail(one_line(exc), log_file)
    except MemoryError:
        _fail("virnucflow: error: out of host memory", log_file)


def rule_step(snakemake) -> contextlib.AbstractContextManager[None]:  # noqa: ANN001 (Snakemake's object)
    """:func:`cli_step` logging to the rule's first ``log:`` file."""
    return cli_step(snakemake.log[0] if snakemake.log else None)


def _fail(line: str, log_file: str | Path | None) -> None:
    log.debug("failed", exc_info=True)
    print(line, file=sys.stderr)
    if log_file:
        with open(log_file, "a") as f:
            f.write(line + "\n")
    sys.exit(1)
