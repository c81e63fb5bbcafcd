"""Errors that end a run with one clear line.

Every failure a user can cause (bad input, wrong or missing model files, out of
memory) raises a subclass of :class:`VirNucFlowError` whose message names the
file and the problem. The command-line entry points print ``virnucflow: error:
<message>`` and exit with status 1 instead of a traceback.
"""


class VirNucFlowError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(VirNucFlowError):
    """Malformed or unusable input data (FASTA, sample sheet, shard files)."""


class ModelFileError(VirNucFlowError):
    """A model file is missing, truncated or not the expected architecture."""


class MergeError(VirNucFlowError):
    """Per-model embeddings that do not line up by sequence ID."""


class NumericalError(VirNucFlowError):
    """Non-finite values in computed embeddings or scores."""


class ConfigError(VirNucFlowError):
    """A configuration value (or an environment override) that cannot be used."""


class ResourceError(VirNucFlowError):
    """Out of memory or no usable device."""


def short(exc: BaseException, limit: int = 240) -> str:
    """An exception's text on one line, cut at ``limit`` characters (for messages that quote it)."""
    text = " ".join(str(exc).split())
    return text[:limit] + ("..." if len(text) > limit else "")


class OutputError(VirNucFlowError):
    """An output that cannot be written (disk full, read-only or unwritable folder)."""


class CheckFailed(VirNucFlowError):
    """An installation check (``virnucflow selftest``) found results that differ from the reference."""
