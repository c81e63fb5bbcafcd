"""``virnucflow status [DIR]``: where a running or finished run stands, per sample.

Read only from the working directory's ``results/`` and ``logs/`` (no
Snakemake call, so it works while Snakemake holds its lock):

- steps: the per-sample steps whose output exists, out of preprocess, shard,
  one embedding per shard and model (one job per shard embeds both, each
  model's file written when that model is done), NaN/Inf gate, predict and
  window tracks, and merge (``features.h5``) where it is configured, i.e. once
  its log or output exists (the embeddings are counted once the shards exist;
  before that the total is shown with ``+``);
- frames embedded / total per model: frames of the shards whose embedding file
  exists, plus, for a shard still running, its share done according to the
  model's last progress line in the job's log (:mod:`virnucflow.progress`);
- ETA: the longest ETA among the running embedding jobs' last progress lines;
- a step whose output is missing and whose log ends with the one-line error
  (``virnucflow: error: ...``) is shown as failed, with that line and the log.
  Samples are those with a ``results/<sample>/preprocess`` folder or a
  ``logs/<sample>/preprocess.log`` (a sample that failed in preprocessing has
  only its log).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from .progress import parse_progress

MODELS = ("dnabert_s", "esm2")
# (step, output relative to results/{sample}) of the jobs outside the embedding
SINGLE_STEPS = [
    ("preprocess", "preprocess/records.tsv"),
    ("shard", None),  # all shard files
    ("nan_gate", "qc/nan_gate.tsv"),
    ("predict", "summary.tsv"),
    ("windows", "windows.bed"),
]
# Steps only some configurations run (output.features, output.merged_pt): counted once their log or output exists.
OPTIONAL_STEPS = [("merge", "features.h5")]


@dataclass
class SampleStatus:
    name: str
    steps_done: int = 0
    steps_total: int = 0
    shards_known: bool = False
    frames_total: int | None = None
    frames_done: dict[str, int] = field(default_factory=dict)
    eta_seconds: float | None = None
    running: list[str] = field(default_factory=list)
    failed: tuple[str, str, str] | None = None  # step, its error line, its log

    def line(self) -> str:
        total = f"{self.steps_total}" if self.shards_known else f"{self.steps_total}+"
        parts = [f"{self.name}: steps {self.steps_done}/{total}"]
        for model in MODELS:
            if self.frames_total is None:
                parts.append(f"{model} frames ?/?")
            else:
                parts.append(f"{model} frames {self.frames_done.get(model, 0)}/{self.frames_total}")
        if self.failed is not None:
            step, error, log = self.failed
            parts.append(f"FAILED in {step} ({log}): {error}")
        elif self.steps_done == self.steps_total and self.shards_known:
            parts.append("finished")
        elif self.eta_seconds is not None:
            parts.append(f"ETA {dt.timedelta(seconds=round(self.eta_seconds))}")
        else:
            parts.append("ETA ?")
        return ", ".join(parts)


def _shard_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def _read_log(log_file: Path) -> str:
    try:
        return log_file.read_text(errors="replace")
    except OSError:
        return ""


def _error_line(text: str) -> str | None:
    """A log's last line if it is a step's one-line error (``virnucflow: error: ...``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines and lines[-1].startswith("virnucflow: error:") else None


def sample_status(workdir: Path, sample: str) -> SampleStatus:
    res, logs = workdir / "results" / sample, workdir / "logs" / sample
    st = SampleStatus(sample)
    shards = sorted((res / "shards").glob("*-of-*.tsv")) if (res / "shards").is_dir() else []
    n_expected = int(shards[0].stem.split("-of-")[1]) if shards else 0
    st.shards_known = bool(shards) and len(shards) == n_expected
    optional = [(step, out) for step, out in OPTIONAL_STEPS if (res / out).exists() or (logs / f"{step}.log").exists()]
    st.steps_total = len(SINGLE_STEPS) + len(optional) + 2 * n_expected
    for step, out in SINGLE_STEPS + optional:
        if (st.shards_known if out is None else (res / out).exists()):
            st.steps_done += 1
        elif st.failed is None and (error := _error_line(_read_log(logs / f"{step}.log"))):
            st.failed = (step, error, str(Path("logs") / sample / f"{step}.log"))
    if not st.shards_known:
        return st
    rows = {s.stem: _shard_rows(s) for s in shards}
    st.frames_total = sum(rows.values())
    etas = []
    for model in MODELS:
        done = 0.0
        for item, n in rows.items():
            if (res / "embeddings" / model / f"{item}.h5").exists():
                st.steps_done += 1
                done += n
                continue
            log_file = logs / "embed" / f"{item}.log"
            if not log_file.exists():
                continue
            text = _read_log(log_file)
            error = _error_line(text)
            if error:
                st.failed = st.failed or ("embed", error, str(Path("logs") / sample / "embed" / f"{item}.log"))
                continue
            st.running.append(f"{model} {item}")
            line = parse_progress(text, model)
            if line is not None and line.total:
                done += n * line.done / line.total
                if line.eta_seconds is not None:
                    etas.append(line.eta_seconds)
        st.frames_done[model] = int(done)
    st.eta_seconds = max(etas) if etas else None
    return st


def run_status(workdir: str | os.PathLike = ".") -> list[SampleStatus]:
    """Status of every sample with a folder in ``DIR/results`` or a preprocessing log (sorted by name)."""
    wd = Path(workdir)
    results = wd / "results"
    if not results.is_dir():
        from .errors import InputError

        raise InputError(f"{wd}: no results/ folder: not a VirNucFlow working directory, or nothing has run yet")
    samples = {p.name for p in results.iterdir() if (p / "preprocess").is_dir()}
    if (wd / "logs").is_dir():
        samples |= {p.name for p in (wd / "logs").iterdir() if (p / "preprocess.log").is_file()}
    samples = sorted(samples)
    return [sample_status(wd, s) for s in samples]
