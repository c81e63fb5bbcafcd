"""``virnucflow status [DIR]``: where a running or finished run stands, per sample.

Read only from the working directory's ``results/`` and ``logs/`` (no
Snakemake call, so it works while Snakemake holds its lock):

- steps: the sample's steps whose output exists, out of preprocess, its
  batch's shard plan, one embedding and one scoring job per shard of its batch
  (one job per shard embeds both models; a batch is the sample or several
  pooled ones), the batch's NaN/Inf gate, and predict (calls, summary and
  window tracks), and merge (``features.h5``) where it is configured, i.e.
  once its log or output exists (the shards are counted once the plan exists;
  before that the total is shown with ``+``);
- frames embedded / total per model: the sample's frames in the shards
  embedded (or already scored: their embedding files may be removed), plus,
  for a shard still running, its share done according to the model's last
  progress line in the job's log (:mod:`virnucflow.planning.progress`);
- ETA: the longest ETA among the running embedding jobs' last progress lines;
- a step whose output is missing and whose log ends with the one-line error
  (``virnucflow: error: ...``) is shown as failed, with that line and the log;
- the run's own record, Snakemake's newest ``.snakemake/log/*.snakemake.log``:
  every ``Error in rule`` of the last run marks the samples of its log file
  (``logs/<sample>/...``, or a batch's samples for ``logs/batches/<batch>/...``)
  FAILED, also where the job left no error line (killed, out of memory); a
  failed job of no sample (a model check, the run report) gets a ``run:`` line.
  Samples are those with a ``results/<sample>/preprocess`` folder or a
  ``logs/<sample>/preprocess.log`` (a sample that failed in preprocessing has
  only its log).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virnucflow.models.registry import names
from virnucflow.planning.progress import parse_progress

MODELS = names()  # the embedding models (virnucflow.models.registry)
# (step, output) of the sample's own jobs and of its batch's: {res} is results/{sample}, {batch} results/batches/{batch}
SINGLE_STEPS = [
    ("preprocess", "{res}/preprocess/records.tsv", "{logs}/preprocess.log"),
    ("plan_shards", "{batch}/shards.tsv", "{blogs}/plan_shards.log"),
    ("nan_gate", "{batch}/nan_gate.tsv", "{blogs}/nan_gate.log"),
    ("predict", "{res}/windows.tsv", "{logs}/predict.log"),
]
# Steps only some configurations run (output.features, output.merged_pt): counted once their log or output exists.
OPTIONAL_STEPS = [("merge", "{res}/features.h5", "{logs}/merge.log")]


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

    @property
    def state(self) -> str:
        if self.failed is not None:
            return "failed"
        return "finished" if self.steps_done == self.steps_total and self.shards_known else "running"

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


def _read_log(log_file: Path) -> str:
    try:
        return log_file.read_text(errors="replace")
    except OSError:
        return ""


def _error_line(text: str) -> str | None:
    """A log's last line if it is a step's one-line error (``virnucflow: error: ...``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines and lines[-1].startswith("virnucflow: error:") else None


def _batch_of(workdir: Path, sample: str) -> str | None:
    """The batch whose plan lists the sample (the run's plans under results/batches/)."""
    batches = workdir / "results" / "batches"
    if (batches / sample / "shards.tsv").exists():
        return sample
    for plan in sorted(batches.glob("*/shards.tsv")) if batches.is_dir() else []:
        with open(plan) as f:
            if any(line.split("\t")[1] == sample for line in f):
                return plan.parent.name
    return None


def _plan(path: Path) -> dict[str, dict[str, int]]:
    """shard -> sample -> frames of a batch's plan."""
    out: dict[str, dict[str, int]] = {}
    with open(path) as f:
        f.readline()
        for line in f:
            shard, sample, first, stop = line.split("\t")[:4]
            out.setdefault(shard, {})
            if sample:
                out[shard][sample] = int(stop) - int(first)
    return out


def sample_status(workdir: Path, sample: str) -> SampleStatus:
    st = SampleStatus(sample)
    batch = _batch_of(workdir, sample)
    where = {"res": f"results/{sample}", "logs": f"logs/{sample}", "batch": f"results/batches/{batch}",
             "blogs": f"logs/batches/{batch}"}
    plan_file = workdir / where["batch"] / "shards.tsv"
    plan = _plan(plan_file) if batch and plan_file.exists() else {}
    st.shards_known = bool(plan)
    optional = [step for step in OPTIONAL_STEPS
                if any((workdir / p.format(**where)).exists() for p in step[1:])]
    st.steps_total = len(SINGLE_STEPS) + len(optional) + 2 * len(plan)  # embed and score per shard
    for step, out, log in SINGLE_STEPS + optional:
        if batch is None and "{batch" in out + log:
            continue
        if (workdir / out.format(**where)).exists():
            st.steps_done += 1
        elif st.failed is None and (error := _error_line(_read_log(workdir / log.format(**where)))):
            st.failed = (step, error, log.format(**where))
    if not plan:
        return st
    st.frames_total = sum(parts.get(sample, 0) for parts in plan.values())
    res, logs = workdir / where["batch"], workdir / where["blogs"]
    etas = []
    done = dict.fromkeys(MODELS, 0.0)
    for shard, parts in plan.items():
        n = parts.get(sample, 0)
        scored = (res / "scores" / f"{shard}.json").exists()
        if scored:
            st.steps_done += 2
            for model in MODELS:
                done[model] += n
            continue
        error = _error_line(_read_log(logs / "score" / f"{shard}.log"))
        if error:
            st.failed = st.failed or ("score", error, f"{where['blogs']}/score/{shard}.log")
        embedded = (res / "embed" / f"{shard}.json").exists()  # the embedding job's last output
        if embedded:
            st.steps_done += 1
        log_file = logs / "embed" / f"{shard}.log"
        text = _read_log(log_file) if not embedded and log_file.exists() else ""
        error = _error_line(text)
        if error:
            st.failed = st.failed or ("embed", error, f"{where['blogs']}/embed/{shard}.log")
        for model in MODELS:
            if embedded or (res / "embeddings" / model / f"{shard}.h5").exists():
                done[model] += n
            elif text and not error:
                st.running.append(f"{model} {shard}")
                line = parse_progress(text, model)
                if line is not None and line.total:
                    done[model] += n * line.done / line.total
                    if line.eta_seconds is not None:
                        etas.append(line.eta_seconds)
    st.frames_done = {m: int(v) for m, v in done.items()}
    st.eta_seconds = max(etas) if etas else None
    return st


@dataclass
class RunRecord:
    """The last run, from Snakemake's own log: finished, failed, running, stopped (no lock, no end) or none."""

    log: str | None = None
    state: str = "none"
    failures: list[dict] = field(default_factory=list)  # per failed job: rule, logs, error line, samples

    def lines(self) -> list[str]:
        out = [f"run: FAILED in {f['rule']} ({', '.join(f['logs']) or 'no log'}): {f['error']}"
               for f in self.failures if not f.get("samples")]
        if self.state == "failed" and not self.failures:
            out.append(f"run: FAILED ({self.log}): see the end of that log")
        if self.state == "stopped":
            out.append(f"run: stopped before it finished ({self.log}, no Snakemake lock held): run the same command "
                       "again with --rerun-incomplete")
        return out


_ERROR_BLOCK = re.compile(r"^Error in rule (\S+):\n((?:[ \t]+.*\n?)*)", re.M)


def last_run(workdir: str | os.PathLike) -> RunRecord:
    """What Snakemake's newest log in ``DIR/.snakemake/log`` says of the run it records."""
    wd = Path(workdir)
    logs = sorted((wd / ".snakemake" / "log").glob("*.snakemake.log"))  # named by start time
    if not logs:
        return RunRecord()
    text = _read_log(logs[-1])
    record = RunRecord(log=str(logs[-1].relative_to(wd)))
    for m in _ERROR_BLOCK.finditer(text):
        files: list[str] = []
        for line in m.group(2).splitlines():
            line = line.strip()
            if line.startswith("log: "):
                files = [f.strip() for f in line[5:].split(" (check log")[0].split(",") if f.strip()]
        error = next((e for f in files if (e := _error_line(_read_log(wd / f)))), None)
        record.failures.append({"rule": m.group(1), "logs": files,
                                "error": error or "the job left no error line in its log (killed? out of memory or "
                                                  "time? see the scheduler's record of the job)"})
    locked = any((wd / ".snakemake" / "locks").glob("*")) if (wd / ".snakemake" / "locks").is_dir() else False
    if record.failures or "Exiting because a job execution failed" in text:
        record.state = "failed"
    elif re.search(r"\b(\d+) of \1 steps \(100%\) done", text) or "Nothing to be done" in text:
        record.state = "finished"
    else:
        record.state = "running" if locked else "stopped"
    return record


def _samples_of(workdir: Path, log_file: str, samples: list[str]) -> list[str]:
    """The samples a failed job's log belongs to: logs/<sample>/..., or the samples of logs/batches/<batch>/..."""
    parts = Path(log_file).parts
    if len(parts) > 2 and parts[0] == "logs" and parts[1] in samples:
        return [parts[1]]
    if len(parts) > 3 and parts[:2] == ("logs", "batches"):
        plan = workdir / "results" / "batches" / parts[2] / "shards.tsv"
        if plan.exists():
            return sorted({s for shard in _plan(plan).values() for s in shard})
        return [parts[2]] if parts[2] in samples else []
    return []


def run_status(workdir: str | os.PathLike = ".") -> tuple[list[SampleStatus], RunRecord]:
    """Status of every sample with a folder in ``DIR/results`` or a preprocessing log (sorted by name),
    and the last run's record."""
    wd = Path(workdir)
    results = wd / "results"
    if not results.is_dir():
        from virnucflow.errors import InputError

        raise InputError(f"{wd}: no results/ folder: not a VirNucFlow working directory, or nothing has run yet")
    samples = {p.name for p in results.iterdir() if (p / "preprocess").is_dir() and p.name != "batches"}
    if (wd / "logs").is_dir():
        samples |= {p.name for p in (wd / "logs").iterdir() if (p / "preprocess.log").is_file()}
    names = sorted(samples)
    statuses = {s: sample_status(wd, s) for s in names}
    record = last_run(wd)
    for failure in record.failures:
        failure["samples"] = sorted({s for f in failure["logs"] for s in _samples_of(wd, f, names)})
        for s in failure["samples"]:
            if statuses[s].failed is None:
                statuses[s].failed = (failure["rule"], failure["error"], ", ".join(failure["logs"]))
    return list(statuses.values()), record


def status_json(samples: list[SampleStatus], record: RunRecord) -> dict:
    """What ``virnucflow status --json`` prints."""
    return {"run": asdict(record),
            "samples": [{**asdict(s), "state": s.state,
                         "failed": dict(zip(("step", "error", "log"), s.failed)) if s.failed else None} for s in samples]}
