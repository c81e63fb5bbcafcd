"""Opening an input file: compression from its magic bytes, never from its name.

gzip (also BGZF), bzip2, xz and zstd are read through ``xopen`` (gzip by ISA-L's decompressor on a
thread of its own, beside the parsing; the others by Python's modules), past a UTF-8 byte order
mark. A file that is not a regular file (a pipe, a device) is refused: every input is read more
than once. A file that cannot be decompressed gives one line naming it, the format and how far it
was read (:func:`read_error`).
"""

from __future__ import annotations

import io
import lzma
import os
import stat
import zlib
from pathlib import Path
from typing import BinaryIO

from virnucflow.errors import InputError

#: (magic bytes, xopen's format name, the format as users know it, its test command)
MAGIC = [(b"\x1f\x8b", "gz", "gzip", "gzip -t"), (b"BZh", "bz2", "bzip2", "bzip2 -t"),
         (b"\xfd7zXZ\x00", "xz", "xz", "xz -t"), (b"\x28\xb5\x2f\xfd", "zst", "zstd", "zstd -t")]
#: UTF-8 byte order mark (Excel and Windows editors write it): skipped at the start of a file.
BOM = b"\xef\xbb\xbf"


def compression(path: str | os.PathLike) -> str | None:
    """``gz``, ``bz2``, ``xz``, ``zst`` from the file's first bytes, or None (plain)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((fmt for magic, fmt, _, _ in MAGIC if head.startswith(magic)), None)


def decompression_errors() -> tuple[type[BaseException], ...]:
    """What the decompressors raise for damaged data (EOFError: data cut short)."""
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error, lzma.LZMAError]
    try:
        from isal.isal_zlib import error as isal_error

        errors.append(isal_error)
    except ImportError:  # ISA-L is only built for some platforms
        pass
    for module in ("backports.zstd", "compression.zstd", "zstandard"):
        try:
            errors.append(__import__(module, fromlist=["ZstdError"]).ZstdError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


DECOMPRESSION_ERRORS = decompression_errors()


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str = "FASTA file") -> Path:
    """``path`` if it is a readable regular file; else one-line :class:`InputError`."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{p}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise InputError(f"{p}: is {_kind(mode)}, not a regular file: the workflow reads each input more than "
                         "once (to plan the jobs, then to preprocess); save it to a file first")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: file is not readable (permission denied)")
    return p


def open_input(path: str | os.PathLike, ahead: bool = True) -> BinaryIO:
    """``path`` for binary reading, decompressed, past a byte order mark; ``ahead``: gzip decompressed
    on a thread of its own (for reading the whole file; not to look at its start)."""
    from xopen import xopen

    p = check_regular(path)
    try:
        fmt = compression(p)
        threads = 1 if fmt == "gz" and ahead else 0
        handle: BinaryIO = open(p, "rb") if fmt is None else xopen(p, "rb", threads=threads, format=fmt)
        if not hasattr(handle, "peek"):
            handle = io.BufferedReader(handle)  # type: ignore[arg-type]
        if handle.peek(3)[:3] == BOM:
            handle.read(3)
    except PermissionError:
        raise InputError(f"{p}: file is not readable (permission denied)") from None
    except DECOMPRESSION_ERRORS as exc:
        raise read_error(p, exc) from None
    return handle


def starts_with_bom(path: str | os.PathLike) -> bool:
    """Whether the (decompressed) file starts with a UTF-8 byte order mark (which the readers skip)."""
    from xopen import xopen

    try:
        fmt = compression(path)
        with (open(path, "rb") if fmt is None else xopen(path, "rb", threads=0, format=fmt)) as f:
            return f.read(3) == BOM
    except DECOMPRESSION_ERRORS:
        return False


def read_error(path: Path, exc: BaseException, lineno: int | None = None) -> InputError:
    """The one-line error for a file that cannot be read on (decompression, I/O)."""
    where = f" past line {lineno}" if lineno else ""
    try:
        fmt = compression(path)
    except OSError:
        fmt = None
    name, test = next(((n, t) for _, f, n, t in MAGIC if f == fmt), (None, None))
    text = " ".join(str(exc).split())
    if name and isinstance(exc, EOFError):
        return InputError(f"{path}: truncated {name} file: cannot read{where} (the compressed data stops "
                          f"mid-stream); check the file ({test}) or fetch it again")
    if name and not isinstance(exc, PermissionError):
        return InputError(f"{path}: corrupt {name} file: cannot read{where} ({text}); check the file ({test}) "
                          "or fetch it again")
    return InputError(f"{path}: cannot read file{where} ({getattr(exc, 'strerror', None) or text})")


def file_fingerprint(path: str | os.PathLike) -> dict:
    """``{"size": bytes, "blake2b": hex digest}`` of the file as stored."""
    import hashlib

    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16))
        size = f.tell()
    return {"size": size, "blake2b": digest.hexdigest()}
