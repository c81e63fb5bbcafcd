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


class UtilizationSampler:
    """Samples NVML's GPU utilisation (share of time a kernel was running) in a thread.

    ``mean(t0, t1)`` averages the samples taken between two ``time.monotonic()``
    stamps. Used by the benchmarks to report how busy the GPU was.
    """

    def __init__(self, index: int = 0, period_s: float = 0.05):
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.period = period_s
        self.samples: list[tuple[float, int]] = []
        self._stop = False
        self._thread = None

    def __enter__(self) -> "UtilizationSampler":
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True, name="nvml")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.samples.append((time.monotonic(), int(util)))
            time.sleep(self.period)

    def __exit__(self, *exc) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()

    def mean(self, t0: float, t1: float) -> float:
        values = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(values) / len(values) / 100 if values else float("nan")
