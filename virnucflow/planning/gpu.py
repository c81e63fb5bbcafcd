"""Which GPU a local embedding job uses.

Under SLURM (or any scheduler that sets ``CUDA_VISIBLE_DEVICES``) the job uses
the GPU it was given. Snakemake itself assigns no GPU ids to local jobs
(``--resources gpu=N`` only limits how many run at once), so on a multi-GPU
workstation each job takes an exclusive lock ``.gpu_locks/<id>.lock`` on the
first free GPU and keeps it until it exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger("virnucflow")
_held = []  # open lock files, kept for the life of the process


def visible_gpu_count() -> int:
    """GPUs on this machine, counted without initialising CUDA in this process."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def use_compile_cache(path: str | os.PathLike) -> None:
    """Point Inductor's and Triton's caches at ``path`` (config ``compile_cache``), unless
    ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR`` are set already.

    Every embedding job of every run then reuses the kernels an earlier job compiled
    (DNABERT-S's FlexAttention, the Triton kernels) instead of compiling them again. Both
    caches write entries by atomic rename, so concurrent jobs can share them.
    """
    root = Path(path).resolve()
    for var, sub in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
        if not os.environ.get(var):
            os.environ[var] = str(root / sub)
    log.info("compile cache: %s (Inductor), %s (Triton)", os.environ["TORCHINDUCTOR_CACHE_DIR"],
             os.environ["TRITON_CACHE_DIR"])


def claim_gpu(lock_dir: str | os.PathLike = ".gpu_locks", wait_s: float = 3600) -> int | None:
    """Set ``CUDA_VISIBLE_DEVICES`` to a free GPU; None when nothing needs choosing."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    n = visible_gpu_count()
    if n <= 1:
        return None
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for gpu in range(n):
            handle = open(Path(lock_dir) / f"{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _held.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            log.info("using GPU %d of %d (lock %s)", gpu, n, handle.name)
            return gpu
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {n} after {wait_s:.0f} s; run with --resources gpu={n}")
        time.sleep(5)
