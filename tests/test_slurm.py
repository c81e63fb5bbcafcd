"""The demo on a real SLURM scheduler, through `snakemake --profile slurm` installed as a user would.

A single-node cluster (slurmctld, slurmd, slurmdbd; fake GPUs) is started with
../shared/tools/slurm-test-cluster/slurm-up.sh, which apt-installs SLURM on
Debian when needed: so this runs as root (CI) and is skipped otherwise, with
the reason. A cluster that is already up (its slurmctld answers `scontrol
ping`) is used and left running; one this module started, or restarted from a
stale state file, is torn down at the end. ``VIRNUCFLOW_SLURM_TEST=0`` skips it
(for parallel `make test` runs on one machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import pytest

from virnucflow.planning.resources import job_memory_mb

from .conftest import REPO, SHARED

pytestmark = pytest.mark.slow
TOOLS = SHARED / "tools" / "slurm-test-cluster"
STATE = Path("/run/slurm-test/state")
RUN_LIMIT_S = 900  # a run that has not finished by then hangs
JOB_RULES = Counter({"preprocess": 2, "plan_shards": 2, "embed": 2, "score": 2, "nan_gate": 2,
                     "merge": 2, "export_merged_pt": 2, "predict": 2, "report_sample": 2,
                     "report_run": 1})  # the demo: 2 samples, each its own batch (shards: 2) of one shard (< 4,096 frames)
LAMBDA = [f"results/demo_lambda/{f}" for f in ("prediction_results.txt", "prediction_results_highestscore.csv",
                                              "summary.tsv", "demo_lambda_merged.pt", "windows.bed",
                                              "windows.tsv")]  # one sample's outputs but its report
LAMBDA_JOBS = 8  # preprocess, plan_shards, embed (both models), score, nan_gate, merge, export_merged_pt, predict
EMBED_MEM_MB = 1500  # --set-resources embed:mem_mb (config/demo.yaml says 2000)


def _skip_reason() -> str | None:
    if os.environ.get("VIRNUCFLOW_SLURM_TEST", "1") == "0":
        return "VIRNUCFLOW_SLURM_TEST=0"
    if not (TOOLS / "slurm-up.sh").is_file():
        return f"{TOOLS / 'slurm-up.sh'} not found"
    if os.geteuid() != 0:
        return "the test SLURM cluster needs root (CI runs as root)"
    if STATE.is_file():
        return None
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        return "no SLURM and no apt-get to install it (the test cluster is for Debian)"
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = value
    return out


def _controller_up() -> bool:
    """Whether a test cluster is recorded and its slurmctld answers (the state file outlives the daemons:
    a rebooted or restored machine keeps /run/slurm-test/state with nothing running)."""
    if not STATE.is_file() or shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def cluster():
    """The test cluster's settings (slurm-test.env); started here unless one is up and answering already.

    slurm-up.sh is idempotent: with a stale state file it re-uses that WORKDIR and starts what is not running.
    """
    started = not _controller_up()
    if started:
        res = subprocess.run(["bash", str(TOOLS / "slurm-up.sh")], env={**os.environ, "SLURM_TEST_GPUS": "2"},
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, "slurm-up.sh failed:\n" + res.stderr[-3000:]
        assert _controller_up(), "slurm-up.sh finished but `scontrol ping` finds no controller:\n" + res.stderr[-3000:]
        workdir = Path(res.stdout.strip().splitlines()[-1])
    else:
        workdir = Path(subprocess.run(["bash", "-c", f"source {STATE} && echo $WORKDIR"], capture_output=True,
                                      text=True, check=True).stdout.strip())
    settings = _read_env(workdir / "slurm-test.env")
    try:
        yield settings
    finally:
        if started:
            subprocess.run(["bash", str(TOOLS / "slurm-down.sh")], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def home(tmp_path_factory, cluster):
    """A user's HOME with the project's profile installed by `virnucflow install-profile slurm`."""
    home = tmp_path_factory.mktemp("home")
    env = _env(home)
    res = subprocess.run([sys.executable, "-m", "virnucflow", "install-profile", "slurm"], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (home / ".config" / "snakemake" / "slurm" / "profile.yaml").is_file()
    return home


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def _workdir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    demo = REPO / "resources" / "demo"
    (root / "samples.tsv").write_text(
        "sample\tfasta\n"
        f"demo_lambda\t{demo / 'lambda_contigs.fa'}\n"
        f"demo_controls\t{demo / 'synthetic_controls.fa.gz'}\n"
    )
    return root


def _snakemake_args(cluster: dict[str, str], *args: str, device: str | None = None,
                    configfiles: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
           "--configfile", str(REPO / "config" / "demo.yaml"), *configfiles, "--config", "samples=samples.tsv"]
    if device is None and cluster["SLURM_TEST_GPUS"] == "0":
        device = "cpu"
    if device:
        cmd += [f"embedding={{device: {device}}}"]
    return cmd + list(args)


def _slurm(cluster, home: Path, wd: Path, *args: str, device: str | None = None,
           configfiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = _snakemake_args(cluster, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "5", *args,
                          device=device, configfiles=configfiles)
    return subprocess.run(cmd, cwd=wd, env=_env(home), capture_output=True, text=True, timeout=RUN_LIMIT_S)


def _sacct(wd: Path) -> list[dict[str, str]]:
    """The jobs sacct recorded that ran in ``wd`` (allocations only)."""
    fields = ["JobID", "Comment", "State", "ReqMem", "Timelimit", "AllocTRES", "WorkDir"]
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-a", "-S", "now-2hours", "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]
    return [r for r in rows if r["WorkDir"] == str(wd)]


def _wait_for_sacct(wd: Path, n: int) -> list[dict[str, str]]:
    for _ in range(60):
        rows = _sacct(wd)
        if len(rows) >= n and all(r["State"] not in ("RUNNING", "PENDING") for r in rows):
            return rows
        time.sleep(1)
    return _sacct(wd)


def _rule(comment: str) -> str:
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def _content(path: Path, wd: Path) -> object:
    """A file's bytes; for HDF5 its datasets' bytes and its attributes but the provenance ones
    (the model paths are in the working directory; timings differ run to run); for an embedding job's
    record (``embed/*.json``) all but its timings."""
    if path.parent.name == "embed" and path.suffix == ".json":  # an embedding job's record: the same, but timings
        import json

        record = json.loads(path.read_text().replace(str(wd), "WORKDIR"))
        for entry in record["models"].values():
            entry["stats"] = {k: v for k, v in entry["stats"].items() if not k.startswith(("seconds", "tokens_per"))}
        return record
    if path.suffix != ".h5":
        return path.read_bytes().replace(str(wd).encode(), b"WORKDIR")
    out = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes() if obj.dtype.kind != "O"
                                                        else list(obj[()])) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: str(v) for k, v in h5.attrs.items() if not k.endswith(("model_path", "stats"))}
    return out


def _results(wd: Path) -> dict[str, object]:
    # the report's figures and run tables show wall times, which differ run to run
    return {str(p.relative_to(wd)): _content(p, wd) for p in sorted((wd / "results").rglob("*"))
            if p.is_file() and "report" not in p.relative_to(wd).parts and p.relative_to(wd).parts[1] != "run"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The demo run locally with the same shards: what SLURM must reproduce bit for bit."""
    wd = _workdir(tmp_path_factory.mktemp("local"))
    res = subprocess.run(_snakemake_args({"SLURM_TEST_GPUS": "1"}, "--cores", "2"), cwd=wd, capture_output=True,
                         text=True, timeout=RUN_LIMIT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, cluster, home):
    wd = _workdir(tmp_path_factory.mktemp("slurm"))
    # merge's memory from its inputs (the default outside the demo, whose demo.yaml fixes 1000 MB)
    (wd / "auto_mem.yaml").write_text("resources: {merge: {mem_mb: auto}}\n")
    t0 = time.monotonic()
    res = _slurm(cluster, home, wd, "--set-resources", f"embed:mem_mb={EMBED_MEM_MB}", configfiles=("auto_mem.yaml",))
    assert res.returncode == 0, res.stderr[-5000:]
    print(f"demo through SLURM: {time.monotonic() - t0:.0f} s")
    return wd, _wait_for_sacct(wd, sum(JOB_RULES.values()))


def test_every_step_ran_as_a_slurm_job(slurm_run):
    _, jobs = slurm_run
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    assert Counter(_rule(j["Comment"]) for j in jobs) == JOB_RULES


def test_set_resources_changes_only_that_value(slurm_run, cluster):
    _, jobs = slurm_run
    by_rule = {}
    for j in jobs:
        by_rule.setdefault(_rule(j["Comment"]), set()).add((j["ReqMem"], j["Timelimit"]))
    # config/demo.yaml: embedding 2000 MB and runtime auto (the demo's tiny shards: the floor,
    # 15 min), the other steps 1000 MB and 10 min
    assert by_rule["embed"] == {(f"{EMBED_MEM_MB}M", "00:15:00")}
    assert by_rule["preprocess"] == by_rule["report_run"] == {("1000M", "00:10:00")}
    assert by_rule["plan_shards"] == by_rule["nan_gate"] == by_rule["predict"] == by_rule["score"] == {
        ("1000M", "00:10:00")}
    # mem_mb: auto, from each sample's merge inputs (its batch's embedding files) when the job was submitted
    wd, _ = slurm_run
    expected = set()
    for sample in ("demo_lambda", "demo_controls"):
        res = wd / "results" / "batches" / sample
        inputs = [*sorted((res / "embeddings").glob("*/*.h5")), res / "nan_gate.tsv"]
        expected.add((f"{job_memory_mb('merge', sum(f.stat().st_size for f in inputs))}M", "00:10:00"))
    assert by_rule["merge"] == expected, (by_rule["merge"], expected)
    assert ("1000M", "00:10:00") not in expected  # not demo.yaml's fixed value: the derived one
    gpus = {_rule(j["Comment"]): "gres/gpu=1" in j["AllocTRES"] for j in jobs}
    assert gpus["embed"] == (cluster["SLURM_TEST_GPUS"] != "0")
    assert not gpus["preprocess"] and not gpus["merge"]


def test_outputs_are_bit_identical_to_a_local_run(slurm_run, local_run):
    """Every output byte for byte; embedding vectors and features bit for bit (HDF5 datasets)."""
    wd, _ = slurm_run
    local, slurm = _results(local_run), _results(wd)
    assert sorted(slurm) == sorted(local)
    assert [name for name in local if slurm[name] != local[name]] == []


def test_a_cancelled_embedding_job_is_retried_and_the_run_completes(tmp_path, cluster, home, local_run):
    wd = _workdir(tmp_path / "cancel")
    cmd = _snakemake_args(cluster, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "5", *LAMBDA)
    t0 = time.monotonic()
    with open(tmp_path / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=wd, env=_env(home), stdout=log, stderr=subprocess.STDOUT)
        cancelled = None
        try:
            while cancelled is None and proc.poll() is None and time.monotonic() - t0 < RUN_LIMIT_S:
                out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"], capture_output=True,
                                     text=True).stdout
                for line in out.splitlines():
                    jobid, comment, workdir = line.split("|")
                    if workdir == str(wd) and _rule(comment) == "embed":
                        subprocess.run(["scancel", jobid], check=True)
                        cancelled = (jobid, comment)
                        break
                time.sleep(0.2)
            rc = proc.wait(timeout=max(1, RUN_LIMIT_S - (time.monotonic() - t0)))
        finally:
            if proc.poll() is None:
                proc.kill()
    text = (tmp_path / "snakemake.log").read_text()
    assert cancelled is not None, "no embed job was seen running\n" + text[-3000:]
    assert rc == 0, text[-5000:]
    jobs = _wait_for_sacct(wd, LAMBDA_JOBS + 1)  # and the cancelled job's retry
    states = {j["JobID"]: j["State"] for j in jobs}
    assert states[cancelled[0]].startswith("CANCELLED")
    retry = [j for j in jobs if j["Comment"] == cancelled[1] and j["JobID"] != cancelled[0]]
    assert [j["State"] for j in retry] == ["COMPLETED"]
    # runtime auto scales with the attempt: the floor, 15 min, then 30
    assert [j["Timelimit"] for j in jobs if j["JobID"] == cancelled[0]] + [j["Timelimit"] for j in retry] == [
        "00:15:00", "00:30:00"]
    local = _results(local_run)
    assert _results(wd) == {k: v for k, v in local.items() if "demo_controls" not in k}


def test_a_failing_embedding_job_is_retried_then_reported(tmp_path, cluster, home):
    """`embedding.device: cuda` without a usable GPU: the job fails, is resubmitted, and the run ends with the error."""
    wd = _workdir(tmp_path / "fail")
    target = "results/batches/demo_lambda/embeddings/esm2/1-of-1.h5"
    t0 = time.monotonic()
    res = _slurm(cluster, home, wd, target, device="cuda")
    assert res.returncode != 0
    assert time.monotonic() - t0 < RUN_LIMIT_S
    assert "device 'cuda' requested but no CUDA GPU is visible" in res.stdout + res.stderr
    attempts = [j for j in _wait_for_sacct(wd, 3) if _rule(j["Comment"]) == "embed"]
    assert [j["State"] for j in attempts] == ["FAILED"] * 3  # retries: 2 in the profile
    assert sorted(j["Timelimit"] for j in attempts) == ["00:15:00", "00:30:00", "00:45:00"]  # runtime auto x attempt
    assert not (wd / target).exists()
