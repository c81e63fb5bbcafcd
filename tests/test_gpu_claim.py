"""Local multi-GPU runs: each embedding job claims a GPU of its own (virnucflow.planning.gpu.claim_gpu).

No multi-GPU machine is needed: ``nvidia-smi`` is replaced on PATH by a script that lists N
GPUs, the only thing claim_gpu asks of the hardware. The locks, the processes holding them
and ``CUDA_VISIBLE_DEVICES`` are real.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO

# a job: claim a GPU, say which, hold it until stdin closes (the job's lifetime)
JOB = textwrap.dedent(
    """
    import os, sys
    from virnucflow.planning.gpu import claim_gpu
    gpu = claim_gpu(sys.argv[1], wait_s=float(sys.argv[2]))
    print(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def gpus(tmp_path):
    """An environment whose ``nvidia-smi -L`` lists ``n`` GPUs."""

    def make(n: int) -> dict:
        bin_dir = tmp_path / f"bin{n}"
        bin_dir.mkdir()
        lines = "\n".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-{i:08d})" for i in range(n))
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
        smi.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(REPO)
        return env

    return make


def start(env, lock_dir, wait_s=60.0):
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(lock_dir), str(wait_s)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def claimed(job) -> tuple[str, str]:
    line = job.stdout.readline().split()
    assert line, job.stderr.read()
    return line[0], line[1]


def finish(job) -> None:
    job.stdin.close()
    assert job.wait(timeout=30) == 0, job.stderr.read()


def test_concurrent_jobs_take_different_gpus_and_a_waiting_job_gets_the_one_freed(gpus, tmp_path):
    env = gpus(4)
    locks = tmp_path / ".gpu_locks"
    jobs = [start(env, locks) for _ in range(4)]
    got = [claimed(j) for j in jobs]
    # each job sees exactly one device, its own
    assert sorted(g for g, _ in got) == ["0", "1", "2", "3"]
    assert all(gpu == visible for gpu, visible in got)

    fifth = start(env, locks)
    ready, _, _ = select.select([fifth.stdout], [], [], 8)
    assert not ready and fifth.poll() is None  # all four busy: it waits, it neither fails nor shares
    freed = got[2][0]
    finish(jobs[2])
    t0 = time.monotonic()
    assert claimed(fifth) == (freed, freed)
    assert time.monotonic() - t0 < 15  # claim_gpu polls every 5 s
    for j in jobs[:2] + jobs[3:] + [fifth]:
        finish(j)


def test_a_killed_job_frees_its_gpu(gpus, tmp_path):
    """The lock is the process's: a job killed by the OOM killer or Ctrl-C leaves no stale claim."""
    env = gpus(2)
    locks = tmp_path / ".gpu_locks"
    a, b = start(env, locks), start(env, locks)
    ga, gb = claimed(a)[0], claimed(b)[0]
    assert {ga, gb} == {"0", "1"}
    a.kill()
    a.wait(timeout=30)
    c = start(env, locks)
    assert claimed(c)[0] == ga
    finish(b)
    finish(c)


def test_no_free_gpu_in_time_is_an_error_naming_the_fix(gpus, tmp_path):
    env = gpus(2)
    locks = tmp_path / ".gpu_locks"
    holders = [start(env, locks) for _ in range(2)]
    for h in holders:
        claimed(h)
    late = start(env, locks, wait_s=1)
    assert late.wait(timeout=30) != 0
    err = late.stderr.read().strip().splitlines()[-1]
    assert err == "TimeoutError: no free GPU among 2 after 1 s; run with --resources gpu=2"
    for h in holders:
        finish(h)


def test_a_gpu_given_by_the_scheduler_or_a_single_gpu_is_left_alone(gpus, tmp_path):
    locks = tmp_path / ".gpu_locks"
    # SLURM (or the user) chose the device: keep it, take no lock
    env = gpus(4) | {"CUDA_VISIBLE_DEVICES": "3"}
    job = start(env, locks)
    assert claimed(job) == ("None", "3")
    finish(job)
    # one GPU (or none): nothing to choose
    for n in (0, 1):
        job = start(gpus(n), locks)
        assert claimed(job) == ("None", "None")
        finish(job)
    assert not locks.exists()
