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
import os
import sys
from pathlib import Path
from typing import Iterator

from virnucflow.errors import VirNucFlowError

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
    """Run the body as a step: the one error boundary of every command and rule script.

    A :class:`VirNucFlowError` (what a user can cause: bad input, models, config, resources)
    ends the process with its one line and status 1. Any other exception is a bug: one line
    saying so and where its traceback is (``<the step's log>.traceback``, beside the log that
    Snakemake shows for a failed job; without a log, a file in the temporary folder), status 1;
    the traceback never reaches the terminal.
    """
    setup_logging(log_file)
    try:
        yield
    except VirNucFlowError as exc:
        _fail(one_line(exc), log_file)
    except MemoryError:
        _fail("virnucflow: error: out of host memory", log_file)
    except BrokenPipeError:  # the reader of our output went away (``| head``)
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the boundary: a bug, reported in one line
        import traceback

        # beside the job's log, not in it: Snakemake shows a failed job's log on the terminal
        where = Path(f"{log_file}.traceback") if log_file else _crash_file()
        with open(where, "a") as f:
            f.write(traceback.format_exc())
        what = " ".join(str(exc).split())[:200]
        _fail(f"virnucflow: error: unexpected {type(exc).__name__}{': ' + what if what else ''}; this is a bug: "
              f"please report it with {where} (it holds the traceback)", log_file)


def _crash_file() -> Path:
    import tempfile
    import time

    return Path(tempfile.gettempdir()) / f"virnucflow-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def rule_step(snakemake) -> contextlib.AbstractContextManager[None]:  # noqa: ANN001 (Snakemake's object)
    """:func:`cli_step` logging to the rule's first ``log:`` file."""
    return cli_step(snakemake.log[0] if snakemake.log else None)


def _fail(line: str, log_file: str | Path | None) -> None:
    print(line, file=sys.stderr)
    if log_file:
        with open(log_file, "a") as f:
            f.write(line + "\n")
    sys.exit(1)
