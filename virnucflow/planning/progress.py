"""Progress lines of long embedding jobs, and reading them back (``virnucflow status``).

An embedding job logs, at most every :data:`EVERY_S` seconds (30; for tests
and debugging only, the environment variable ``VIRNUCFLOW_PROGRESS_EVERY_S``
sets it, e.g. ``0.5``, in every job Snakemake starts from that environment),

    progress esm2 results/s1/shards/2-of-4.tsv: 12000/50000 sequences (24.0%), 95000 tokens/s, ETA 0:06:10

counting what the GPU has finished, not what was queued: each batch records a
CUDA event and only completed events count (``Event.query()``, no host
synchronisation). :func:`parse_progress` reads the last such line of a log.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass

import torch

log = logging.getLogger("virnucflow")
ENV_EVERY_S = "VIRNUCFLOW_PROGRESS_EVERY_S"  # test/debug only: seconds between progress lines


def _every_s() -> float:
    value = os.environ.get(ENV_EVERY_S, "").strip()
    if not value:
        return 30.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{ENV_EVERY_S}={value!r}: expected a number of seconds >= 0")
    return seconds


EVERY_S = _every_s()  # seconds between progress lines
LINE = re.compile(
    r"progress (?P<model>\S+) (?P<label>.*?): (?P<done>\d+)/(?P<total>\d+) sequences \((?P<pct>[\d.]+)%\), "
    r"(?P<rate>\d+) tokens/s, ETA (?P<eta>\S+)"
)


@dataclass(frozen=True)
class ProgressLine:
    model: str
    label: str
    done: int
    total: int
    tokens_per_second: int
    eta_seconds: float | None


class Progress:
    """Counts finished batches and logs a line every ``every_s`` seconds."""

    def __init__(self, model: str, label: str, total: int, total_tokens: int, device: torch.device,
                 every_s: float | None = None):
        self.model, self.label, self.total, self.total_tokens = model, label, total, total_tokens
        self.every_s, self.cuda = EVERY_S if every_s is None else every_s, device.type == "cuda"
        self.t0 = self.last = time.monotonic()
        self.pending: collections.deque = collections.deque()  # (event, sequences, tokens) not yet seen finished
        self.done = self.tokens = 0

    def batch_queued(self, sequences: int, tokens: int) -> None:
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
            self.pending.append((event, sequences, tokens))
        else:  # CPU work is finished when queued
            self.done += sequences
            self.tokens += tokens
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._collect()
            log.info("%s", self.line(now))

    def _collect(self) -> None:
        while self.pending and self.pending[0][0].query():
            _, sequences, tokens = self.pending.popleft()
            self.done += sequences
            self.tokens += tokens

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.tokens / elapsed
        left = (self.total_tokens - self.tokens) / rate if rate > 0 else None
        eta = str(dt.timedelta(seconds=round(left))) if left is not None else "?"
        return (f"progress {self.model} {self.label}: {self.done}/{self.total} sequences "
                f"({100 * self.done / max(self.total, 1):.1f}%), {rate:.0f} tokens/s, ETA {eta}")


def parse_progress(text: str, model: str | None = None) -> ProgressLine | None:
    """The last progress line of a log (of ``model``'s lines only, when given), or None."""
    last = None
    for m in LINE.finditer(text):
        if model is None or m["model"] == model:
            last = m
    if last is None:
        return None
    eta = last["eta"]
    seconds = None
    if eta != "?":
        parts = [int(p) for p in re.split(r"[:]", eta.split(", ")[-1])]
        days = int(eta.split(" day")[0]) if "day" in eta else 0
        seconds = days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    return ProgressLine(last["model"], last["label"], int(last["done"]), int(last["total"]), int(last["rate"]), seconds)
